"""Writes the generated half of the mail corpus: messages whose bytes matter (legacy charsets,
base64 bodies, mislabelled charsets, attachments with exact sizes). The client replies with
hand-made quoting are written by hand beside them. Run it from the repository root:

    python tests/mail/make_corpus.py

The output is committed; the tests read the files, never this script, so a change here shows in
the diff of the .eml files.
"""

from __future__ import annotations

import base64
import hashlib
from email import policy
from email.message import EmailMessage
from pathlib import Path

HERE = Path(__file__).parent
OUR_ID = "cg.20240301.0001@support.example.com"


def text_part(text: str, subtype: str = "plain", *, label: str = "utf-8", codec: str | None = None,
              cte: str = "base64") -> EmailMessage:
    """A text part encoded with ``codec`` but labelled ``label``, as mislabelling mailers do."""
    part = EmailMessage()
    part.set_content(text.encode(codec or label), "text", subtype, cte=cte)
    part.set_param("charset", label)
    return part


def headers(msg: EmailMessage, **fields: str) -> bytes:
    """The message with ``fields`` written in front exactly as given: through EmailMessage they
    would be re-encoded as UTF-8, and the point is the sender's own (mis)labelled words."""
    for number, part in enumerate(p for p in msg.walk() if p.is_multipart()):
        part.set_boundary(f"----=_Part_{number}_{len(fields.get('Message_ID', ''))}")
    lines = "".join(f"{name.replace('_', '-')}: {value}\r\n" for name, value in fields.items())
    return lines.encode("ascii") + msg.as_bytes(policy=policy.SMTP)


def b_word(text: str, label: str, codec: str | None = None) -> str:
    return f"=?{label}?B?{base64.b64encode(text.encode(codec or label)).decode()}?="


def write(name: str, data: bytes) -> None:
    (HERE / name).write_bytes(data)


def png(size: int) -> bytes:
    """A deterministic blob that starts like a PNG (the parser never decodes images)."""
    seed = b"\x89PNG\r\n\x1a\n"
    out = bytearray(seed)
    block = hashlib.sha256(seed).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


def foxmail() -> bytes:
    # Foxmail 7 labels GBK text "gb2312"; 喆 and 镕 are outside GB2312.
    body = ("您好，订单还没有收到，麻烦帮忙查一下。\n\n王喆\n\n"
            "\n发件人： 客服中心\n发送时间： 2024-03-01 10:00\n收件人： wangzhe@foxmail.com\n"
            "主题： 订单 1042 已发货 [#K7M3QX]\n\n您的订单已发货，朱镕先生签收。\n")
    msg = text_part(body, label="gb2312", codec="gb18030")
    return headers(msg, From=f'"{b_word("王喆", "gb2312", "gb18030")}" <WangZhe@foxmail.com>',
                   To="support@example.com",
                   Subject=b_word("回复: 订单 1042 已发货 [#K7M3QX]", "gb2312", "gb18030"),
                   Date="Fri, 1 Mar 2024 11:20:05 +0800", Message_ID="<202403011120050321145@foxmail.com>",
                   In_Reply_To=f"<{OUR_ID}>", References=f"<{OUR_ID}>", X_Mailer="Foxmail 7.2.25.228[cn]")


def netease163() -> bytes:
    plain = ("还是没有收到货，物流单号查不到。\n\n"
             "在 2024-03-01 10:00:00，\"客服中心\" <support@example.com> 写道：\n"
             ">您的订单已发货。\n>物流单号：SF1234567890\n")
    html = ("<div style=\"line-height:1.7;font-size:14px\"><div>还是没有收到货，物流单号查不到。</div>"
            "<br><div>在 2024-03-01 10:00:00，\"客服中心\" &lt;support@example.com&gt; 写道：</div>"
            "<blockquote id=\"isReplyContent\" style=\"PADDING-LEFT: 1ex; MARGIN: 0px 0px 0px 0.8ex\">"
            "您的订单已发货。<br>物流单号：SF1234567890</blockquote></div><br>")
    msg = EmailMessage()
    msg.make_alternative()
    msg.attach(text_part(plain, label="GBK", codec="gb18030"))
    msg.attach(text_part(html, "html", label="GBK", codec="gb18030"))
    return headers(msg, From=f'"{b_word("李娜", "GBK", "gb18030")}" <lina_2024@163.com>',
                   To='"support" <support@example.com>',
                   Subject=b_word("Re:订单 1042 已发货 [#K7M3QX]", "GBK", "gb18030"),
                   Date="Fri, 1 Mar 2024 12:01:44 +0800 (CST)",
                   Message_ID="<5f2e8a1c.3b21.18df8a6c0b1.Coremail.lina_2024@163.com>",
                   In_Reply_To=f"<{OUR_ID}>", References=f"<{OUR_ID}>",
                   X_Mailer="Coremail Webmail Server Version XT5.0.14 build 20230109(dcb5de15)")


def big5() -> bytes:
    msg = text_part("請問退貨要怎麼辦理？謝謝。\n", label="big5", codec="big5")
    return headers(msg, From=f"{b_word('陳小明', 'big5')} <ming@example.com.tw>",
                   To="support@example.com", Subject=b_word("退貨問題", "big5"),
                   Date="Sat, 2 Mar 2024 09:15:00 +0800", Message_ID="<big5.0001@example.com.tw>")


def html_only() -> bytes:
    html = ("<html><head><style>p{color:red}</style></head><body>"
            "<p>Hello,</p><p>My invoice <b>INV-77</b> is wrong:</p>"
            "<table><tr><td>Item</td><td>Price</td></tr><tr><td>Router</td><td>&euro;49</td></tr></table>"
            "<p>See <a href=\"https://example.org/inv/77\">the invoice</a>.</p>"
            "<script>alert(1)</script></body></html>")
    msg = text_part(html, "html", cte="quoted-printable")
    return headers(msg, From="=?utf-8?Q?Ren=C3=A9e_Dupont?= <Renee.Dupont@Example.FR>",
                   To="support@example.com",
                   Subject="=?utf-8?Q?Facture_erron=C3=A9e_=E2=80=94_INV-77?=",
                   Date="Mon, 4 Mar 2024 08:00:00 +0100", Message_ID="<html-only.77@example.fr>")


def latin() -> bytes:
    # Labelled ISO-8859-1, written by a Windows-1252 encoder: the quotes are 0x93/0x94.
    msg = text_part("“Café” costs 5 € — why?\n", label="iso-8859-1", codec="cp1252",
                    cte="quoted-printable")
    return headers(msg, From="Jose <jose@example.es>", To="support@example.com",
                   Subject="=?iso-8859-1?Q?Caf=E9?=", Date="Tue, 5 Mar 2024 10:00:00 +0100",
                   Message_ID="<latin.1@example.es>")


def cyrillic() -> bytes:
    msg = text_part("Здравствуйте, где мой заказ?\n", label="windows-1251", cte="8bit")
    return headers(msg, From=f"{b_word('Иван', 'koi8-r')} <ivan@example.ru>", To="support@example.com",
                   Subject=b_word("Заказ", "windows-1251"), Date="Tue, 5 Mar 2024 12:00:00 +0300",
                   Message_ID="<cyr.1@example.ru>")


def attachments() -> bytes:
    msg = EmailMessage()
    fields = dict(From="Anna Schmidt <anna@example.de>", To="support@example.com",
            Subject="Photos of the broken router", Date="Wed, 6 Mar 2024 14:30:00 +0100",
            Message_ID="<attach.1@example.de>")
    msg.set_content("The router arrived broken, photos attached.\n")
    msg.add_alternative('<p>The router arrived broken, photos attached.</p><img src="cid:photo1@example.de">',
                        subtype="html")
    msg.get_payload()[1].add_related(png(2048), "image", "png", cid="<photo1@example.de>",
                                     disposition="inline", filename="photo1.png")
    msg.add_attachment(png(5000), "application", "pdf", filename="報價單 2024.pdf")  # RFC 2231
    docx = msg.add_attachment(b"PK\x03\x04" + b"\x00" * 96,
                              "application", "vnd.openxmlformats-officedocument.wordprocessingml.document")
    # Outlook and Chinese clients put RFC 2047 words in the name, in GB2312 (not RFC 2231).
    part = msg.get_payload()[-1]
    del part["Content-Disposition"]
    part["Content-Disposition"] = f'attachment; filename="{b_word("合同.docx", "gb2312")}"'
    assert docx is None
    return headers(msg, **fields)


def big_attachment() -> bytes:
    msg = EmailMessage()
    fields = dict(From="anna@example.de", To="support@example.com", Subject="Full logs",
            Date="Wed, 6 Mar 2024 15:00:00 +0100", Message_ID="<attach.2@example.de>")
    msg.set_content("Logs attached.\n")
    msg.add_attachment(png(300_000), "application", "zip", filename="logs.zip")
    return headers(msg, **fields)


def mislabelled() -> bytes:
    # Says UTF-8, is GBK; the second part is cut off mid-base64 and never closed.
    gbk = "退款什么时候到账？".encode("gb18030")
    return (b"From: =?gb2312?B?1cXI/Q==?= <zhangsan@example.cn>\r\n"
            b"To: support@example.com\r\nSubject: =?x-unknown?B?dGVzdA==?= refund\r\n"
            b"Date: not a date\r\nMessage-ID: <broken.1@example.cn>\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
            b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            + gbk + b"\r\n--b1\r\nContent-Type: application/octet-stream; name=\"a.bin\"\r\n"
            b"Content-Disposition: attachment; filename=\"a.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            b"AAECAwQFBgcICQ")


if __name__ == "__main__":
    write("foxmail_zh_reply.eml", foxmail())
    write("netease163_zh_reply.eml", netease163())
    write("big5_plain.eml", big5())
    write("html_only.eml", html_only())
    write("latin1_cp1252.eml", latin())
    write("windows1251.eml", cyrillic())
    write("attachments.eml", attachments())
    write("big_attachment.eml", big_attachment())
    write("malformed_mislabelled.eml", mislabelled())
