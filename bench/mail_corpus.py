"""The mails of the email figure: what customers write, generated so the client spends little
CPU on them (templates filled in, no ``email`` package).

One :class:`MailStream` is one SMTP connection's mails, one after the other. Every
``THREAD_LENGTH``-th mail opens a thread; the others reply to the previous mail of that thread
(``In-Reply-To`` it, ``References`` the whole thread) with the last answer quoted under the new
text, so the gateway threads them by Message-ID and strips the quote. Threads take turns
between three shapes: plain ASCII English, multipart/alternative (text and HTML), and Chinese in
GBK (base64 body, RFC 2047 subject) with a Chinese client's "在 … 写道：" quote. Every
``ATTACHMENT_EVERY``-th mail also carries a ``ATTACHMENT_BYTES`` PDF. Each thread is written by
one of ``CUSTOMERS`` customers of the stream, so returning customers open threads too.
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass
from email.utils import formatdate

SUPPORT = "support@acme.example"
SUPPORT_DOMAIN = "acme.example"
CUSTOMER_DOMAIN = "customer.example"
THREAD_LENGTH = 4            # mails per thread: 1 new + 3 replies, so a quarter of the mails open a thread
ATTACHMENT_EVERY = 5
ATTACHMENT_BYTES = 4096
CUSTOMERS = 5                # customers per stream
SHAPES = ("plain", "alternative", "gbk")

_ENGLISH_NEW = ("Hello,\r\n\r\nmy order {order} has not arrived yet. The tracking page has said\r\n"
                "'in transit' for a week now. Could you check where the parcel is?\r\n\r\n"
                "Thanks,\r\nCustomer {customer}\r\n\r\n-- \r\nCustomer {customer}\r\nSent from my phone\r\n")
_ENGLISH_REPLY = ("Any news on this? It is still not here, and I need it by Friday.\r\n\r\n"
                  "On Tue, 1 Dec 2026 at 10:00, Acme Support <support@acme.example> wrote:\r\n"
                  "> Thank you for your mail. We are looking into order {order} and will\r\n"
                  "> come back to you shortly.\r\n>\r\n> Acme Support\r\n")
_CHINESE_NEW = "您好，\n\n我的订单 {order} 还没有到，物流信息一周都没有更新。请帮我查一下包裹在哪里。\n\n谢谢！\n顾客 {customer}\n"
_CHINESE_REPLY = ("请问有进展吗？包裹还是没有收到，周五之前需要。\n\n"
                  "在 2026年12月1日 10:00，Acme Support <support@acme.example> 写道：\n"
                  "> 感谢您的来信，我们正在查询订单 {order}，稍后回复您。\n")
_CHINESE_SUBJECT = "=?gbk?b?" + base64.b64encode("关于订单的问题".encode("gbk")).decode("ascii") + "?="
_HTML = ("<html><body><p>{first}</p><blockquote>Acme Support wrote: we are looking into "
         "order <b>{order}</b>.</blockquote></body></html>\r\n")
_BOUNDARY = "=_bench_{kind}_{n}"


def _attachment_part() -> str:
    data = bytes(random.Random(4242).getrandbits(8) for _ in range(ATTACHMENT_BYTES))
    return base64.encodebytes(data).decode("ascii").replace("\n", "\r\n")


_ATTACHMENT = _attachment_part()


@dataclass(frozen=True, slots=True)
class OutgoingMail:
    sender: str           # the envelope sender, also From
    data: bytes
    message_id: str
    new_thread: bool


class MailStream:
    """The mails of one SMTP connection; ``name`` must be unique within a gateway's run (it is
    part of every Message-ID and customer address)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent = 0
        self._thread: list[str] = []       # Message-IDs of the current thread so far
        self._date = formatdate(usegmt=True)

    def next(self) -> OutgoingMail:
        index = self.sent
        self.sent += 1
        thread, place = divmod(index, THREAD_LENGTH)
        if place == 0:
            self._thread = []
        customer = f"{self.name}.{thread % CUSTOMERS}"
        sender = f"{customer}@{CUSTOMER_DOMAIN}"
        message_id = f"<{self.name}.{index}@{CUSTOMER_DOMAIN}>"
        order = f"{thread:06d}"
        shape = SHAPES[thread % len(SHAPES)]
        if shape == "gbk":
            subject = f"{_CHINESE_SUBJECT} {order}"
            body = _gbk_part((_CHINESE_REPLY if place else _CHINESE_NEW).format(order=order, customer=customer))
        else:
            subject = f"Where is my parcel? Order {order}"
            text = (_ENGLISH_REPLY if place else _ENGLISH_NEW).format(order=order, customer=customer)
            body = _alternative(text, order, index) if shape == "alternative" else _text_part(text)
        if index % ATTACHMENT_EVERY == ATTACHMENT_EVERY - 1:
            body = _with_attachment(body, index)
        headers = [f"From: Customer {customer} <{sender}>", f"To: Acme Support <{SUPPORT}>",
                   f"Subject: {'Re: ' if place else ''}{subject}", f"Date: {self._date}",
                   f"Message-ID: {message_id}", "MIME-Version: 1.0"]
        if self._thread:
            headers += [f"In-Reply-To: {self._thread[-1]}", f"References: {' '.join(self._thread)}"]
        self._thread.append(message_id)
        data = ("\r\n".join(headers) + "\r\n" + body).encode("ascii")
        return OutgoingMail(sender, data, message_id, place == 0)


def _text_part(text: str) -> str:
    return "Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n" + text


def _gbk_part(text: str) -> str:
    encoded = base64.encodebytes(text.replace("\n", "\r\n").encode("gbk")).decode("ascii").replace("\n", "\r\n")
    return "Content-Type: text/plain; charset=gbk\r\nContent-Transfer-Encoding: base64\r\n\r\n" + encoded


def _alternative(text: str, order: str, index: int) -> str:
    boundary = _BOUNDARY.format(kind="alt", n=index)
    html = _HTML.format(first=text.split("\r\n\r\n", 1)[0].replace("\r\n", " "), order=order)
    return (f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\n{_text_part(text)}\r\n"
            f"--{boundary}\r\nContent-Type: text/html; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
            f"{html}\r\n--{boundary}--\r\n")


def _with_attachment(body: str, index: int) -> str:
    boundary = _BOUNDARY.format(kind="mixed", n=index)
    return (f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\n{body}\r\n"
            f"--{boundary}\r\nContent-Type: application/pdf; name=\"invoice-{index}.pdf\"\r\n"
            f"Content-Disposition: attachment; filename=\"invoice-{index}.pdf\"\r\n"
            f"Content-Transfer-Encoding: base64\r\n\r\n{_ATTACHMENT}\r\n--{boundary}--\r\n")
