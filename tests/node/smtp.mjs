// Sends messages through sendguard's SMTP listener with nodemailer, as a Node.js app does.
// Usage: node smtp.mjs <port> '<JSON: {"pool": bool, "messages": [nodemailer mail options],
//   "transport": {more transport options, e.g. socketTimeout}}>'
// One transport for all the messages (with "pool", one reused connection). Prints a JSON list,
// one entry per message: nodemailer's info (messageId, envelope, accepted, rejected, response)
// or {"error": message, "responseCode": code} when sendMail rejected.
import nodemailer from "nodemailer";

const [port, spec] = process.argv.slice(2);
const { pool = false, messages, transport: options = {} } = JSON.parse(spec);

const transport = nodemailer.createTransport({
  host: "127.0.0.1",
  port: Number(port),
  secure: false,
  ignoreTLS: true,
  pool,
  maxConnections: 1,
  ...options,
});

const results = [];
for (const mail of messages) {
  try {
    const info = await transport.sendMail(mail);
    results.push({
      messageId: info.messageId,
      envelope: info.envelope,
      accepted: info.accepted,
      rejected: info.rejected,
      response: info.response,
    });
  } catch (err) {
    results.push({ error: String(err.message), responseCode: err.responseCode ?? null });
  }
}
transport.close();
process.stdout.write(JSON.stringify(results));
