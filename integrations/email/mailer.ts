import nodemailer from 'nodemailer';
import { SMTP_TIMEOUTS } from './limits.js';

export { SMTP_TIMEOUTS, SMTP_SEND_LIMIT_MS } from './limits.js';

/** The small interface activities send mail through; nodemailer over SMTP behind it. */
export interface OutgoingMail {
  to: string;
  subject: string;
  text: string;
  html: string;
  /** Derived from our ids, so a resend after a crash carries the same Message-ID. */
  messageId: string;
  attachments?: MailAttachment[];
}

export interface MailAttachment {
  filename: string;
  contentType: string;
  content: Buffer;
}

export interface Mailer {
  send(mail: OutgoingMail): Promise<{ messageId: string }>;
  close(): void;
}

export function createSmtpMailer(smtpUrl: string, from: string): Mailer {
  const transport = nodemailer.createTransport({ url: smtpUrl, ...SMTP_TIMEOUTS } as Parameters<typeof nodemailer.createTransport>[0]);
  return {
    async send(mail) {
      const info = await transport.sendMail({ from, to: mail.to, subject: mail.subject, text: mail.text, html: mail.html, messageId: mail.messageId, attachments: mail.attachments });
      return { messageId: String(info.messageId ?? mail.messageId) };
    },
    close: () => transport.close(),
  };
}
