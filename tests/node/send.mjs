// Sends one message through an ESP's official Node SDK, changed only in base URL and key.
// Usage: node send.mjs <sendgrid|postmark|mailgun> <base URL> <key> '<JSON message>'
// Prints the SDK's answer as JSON; exits 1 with the SDK's error if the SDK threw.
import sgMail from "@sendgrid/mail";
import FormData from "form-data";
import Mailgun from "mailgun.js";
import * as postmark from "postmark";

const [esp, base, key, spec] = process.argv.slice(2);
const msg = JSON.parse(spec);

async function sendgrid() {
  sgMail.setApiKey(key);
  sgMail.client.setDefaultRequest("baseUrl", base);
  const [response] = await sgMail.send({
    from: msg.from,
    to: msg.to,
    subject: msg.subject,
    text: msg.text,
    categories: msg.campaign ? [msg.campaign] : undefined,
  });
  return { statusCode: response.statusCode, messageId: response.headers["x-message-id"] };
}

async function postmarkSend() {
  const url = new URL(base);
  const client = new postmark.ServerClient(key, {
    useHttps: url.protocol === "https:",
    requestHost: url.host,
  });
  return client.sendEmail({
    From: msg.from,
    To: msg.to.join(","),
    Subject: msg.subject,
    TextBody: msg.text,
    Tag: msg.campaign,
  });
}

async function mailgun() {
  const client = new Mailgun(FormData).client({ username: "api", key, url: base });
  const data = { from: msg.from, to: msg.to, subject: msg.subject, text: msg.text };
  if (msg.campaign) data["o:tag"] = msg.campaign;
  return client.messages.create("mg.example.org", data);
}

const senders = { sendgrid, postmark: postmarkSend, mailgun };
try {
  console.log(JSON.stringify(await senders[esp]()));
} catch (error) {
  console.error(error && (error.response?.body ? JSON.stringify(error.response.body) : error.stack));
  process.exit(1);
}
