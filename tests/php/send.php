<?php
// Sends one message with PHPMailer over SMTP, set up as WordPress's SMTP plugins set it up
// (WP Mail SMTP, FluentSMTP, Post SMTP: isSMTP, Host, Port, no auth, no TLS), headers added with
// addCustomHeader as a phpmailer_init hook does.
// Usage: php send.php <PHPMailer dir> <host> <port> '<JSON message>'
// The PHPMailer dir is Debian's libphp-phpmailer (autoload.php) or a copy like WordPress's
// wp-includes/PHPMailer (PHPMailer.php, SMTP.php, Exception.php).
// Prints {"sent", "version", "queued_as"} as JSON; exits 1 with PHPMailer's error if send() failed.
use PHPMailer\PHPMailer\PHPMailer;

[, $dir, $host, $port, $spec] = $argv;
if (is_file("$dir/autoload.php")) {
    require "$dir/autoload.php";
} else {
    require "$dir/Exception.php";
    require "$dir/PHPMailer.php";
    require "$dir/SMTP.php";
}
$msg = json_decode($spec, true, flags: JSON_THROW_ON_ERROR);

$mail = new PHPMailer(true);
$mail->isSMTP();
$mail->Host = $host;
$mail->Port = (int) $port;
$mail->SMTPAuth = false;
$mail->SMTPSecure = '';
$mail->SMTPAutoTLS = false;
$mail->setFrom($msg['from']);
foreach ($msg['to'] as $to) {
    $mail->addAddress($to);
}
$mail->Subject = $msg['subject'];
$mail->Body = $msg['text'];
foreach ($msg['headers'] ?? [] as $name => $value) {
    $mail->addCustomHeader($name, $value);
}
try {
    $mail->send();
} catch (Exception $e) {
    fwrite(STDERR, $mail->ErrorInfo . "\n");
    exit(1);
}
// PHPMailer reads the queue id from the DATA reply with Postfix's pattern ("Ok: queued as <id>").
$queued = $mail->getSMTPInstance()->getLastTransactionID();
echo json_encode(['sent' => true, 'version' => PHPMailer::VERSION, 'queued_as' => $queued]), "\n";
