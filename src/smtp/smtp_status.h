/*
 * smtp_status: RFC 3463 enhanced status codes, as words for logs and DSNs
 * ("4.3.1" -> "Mail system full"), the way the appliance's mail_logs show
 * them in Delayed:/Bounced: lines.
 */
#ifndef POSTERN_SMTP_STATUS_H
#define POSTERN_SMTP_STATUS_H

/* The RFC 3463 description of a code "c.s.d" (the class is ignored); a
 * generic text per subject when the detail is unknown; "Other" otherwise. */
const char *smtp_status_text(const char *enhanced);

#endif
