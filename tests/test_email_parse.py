"""The email channel's pure core on a corpus of real-looking mail (``tests/mail/``): headers and
charsets decoded, the new text of replies from the clients our customers use, attachments with
their sizes and hashes, people told from machines, conversation tokens in subjects; and random
bytes that never raise anything but ``MailRejected``."""

from __future__ import annotations

import base64
import hashlib
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from adapters.base import Inbound
from adapters.email import (MailRejected, ParsedMail, base_subject, classify, find_token,
                            lookup_ids, new_token, parse_message, reply_subject, split_reply)
from adapters.email.decode import decode_bytes, decode_header
from adapters.email.threading import ALPHABET

MAIL = Path(__file__).parent / "mail"
OURS = ["Support@example.com"]
OUR_ID = "cg.20240301.0001@support.example.com"


def mail(name: str) -> ParsedMail:
    return parse_message((MAIL / name).read_bytes())


# --- replies from the clients our customers use ------------------------------------------------

REPLIES = {
    "gmail_en_reply.eml": "Hi,\n\nIt still hasn’t arrived. Can you check with the courier?",
    "outlook_en_reply.eml": "Hello,\n\nPlease cancel the order instead.\n\nThanks,\nJane",
    "apple_mail_en_reply.eml": "Thank you! One more question: can I change the delivery address?",
    "qq_zh_reply.eml": "收到，谢谢！请问发票什么时候开？",
    "foxmail_zh_reply.eml": "您好，订单还没有收到，麻烦帮忙查一下。\n\n王喆",
    "netease163_zh_reply.eml": "还是没有收到货，物流单号查不到。",
}


@pytest.mark.parametrize("name", sorted(REPLIES))
def test_a_reply_shows_only_its_new_text_and_keeps_the_whole(name: str) -> None:
    parsed = mail(name)
    assert parsed.text == REPLIES[name]
    assert parsed.full_text.startswith(parsed.text)
    assert len(parsed.full_text) > len(parsed.text)
    assert parsed.in_reply_to == (OUR_ID,)
    assert lookup_ids(parsed)[0] == OUR_ID
    assert find_token(parsed.subject) == "K7M3QX"
    assert classify(parsed, OURS).kind == "person"


def test_full_texts_keep_the_quoted_history() -> None:
    assert "> Your order 1042 has shipped." in mail("gmail_en_reply.eml").full_text
    assert "John Doe\nAcme Ltd." in mail("gmail_en_reply.eml").full_text   # the signature
    assert "-----Original Message-----" in mail("outlook_en_reply.eml").full_text
    assert "Sent from my iPhone" in mail("apple_mail_en_reply.eml").full_text
    assert "------------------ 原始邮件 ------------------" in mail("qq_zh_reply.eml").full_text
    assert "朱镕先生签收" in mail("foxmail_zh_reply.eml").full_text
    assert ">物流单号：SF1234567890" in mail("netease163_zh_reply.eml").full_text


def test_gmail_headers() -> None:
    parsed = mail("gmail_en_reply.eml")
    assert parsed.message_id == "CAF3x9Yq+2hZk1Lw=8mFq1bR@mail.gmail.com"
    assert parsed.references == (OUR_ID,)
    assert parsed.sender is not None
    assert (parsed.sender.address, parsed.sender.name) == ("john.doe@gmail.com", "John Doe")
    assert [a.address for a in parsed.to] == ["support@example.com"]
    assert parsed.subject == "Re: Order 1042 – where is it? [#K7M3QX]"     # UTF-8 Q words
    assert parsed.date == datetime(2024, 3, 1, 10, 14, 19, tzinfo=timezone.utc)
    assert parsed.body_type == "text/plain"                                 # preferred to HTML
    assert parsed.attachments == ()


def test_outlook_references_are_looked_up_newest_first() -> None:
    parsed = mail("outlook_en_reply.eml")
    assert parsed.references == ("cg.20240229.0007@support.example.com", OUR_ID)
    assert lookup_ids(parsed) == (OUR_ID, "cg.20240229.0007@support.example.com")
    assert parsed.sender is not None and parsed.sender.name == "Smith, Jane"


def test_apple_mail_cc_and_date_offset() -> None:
    parsed = mail("apple_mail_en_reply.eml")
    assert [a.address for a in parsed.cc] == ["orders@example.com"]
    assert parsed.date is not None and parsed.date.utcoffset() == timedelta(hours=1)


def test_chinese_clients_names_and_subjects() -> None:
    qq, fox, netease = mail("qq_zh_reply.eml"), mail("foxmail_zh_reply.eml"), mail("netease163_zh_reply.eml")
    assert (qq.sender.address, qq.sender.name) == ("12345678@qq.com", "张三")          # UTF-8 B
    assert qq.subject == "回复： 订单 1042 已发货 [#K7M3QX]"
    # Labelled GB2312, written as GBK: 喆 exists only in GBK/GB18030.
    assert (fox.sender.address, fox.sender.name) == ("wangzhe@foxmail.com", "王喆")
    assert fox.subject == "回复: 订单 1042 已发货 [#K7M3QX]"
    assert (netease.sender.name, netease.subject) == ("李娜", "Re:订单 1042 已发货 [#K7M3QX]")
    assert netease.body_type == "text/plain"


# --- charsets and HTML -------------------------------------------------------------------------

@pytest.mark.parametrize("name, sender, subject, text", [
    ("big5_plain.eml", "陳小明", "退貨問題", "請問退貨要怎麼辦理？謝謝。"),
    ("latin1_cp1252.eml", "Jose", "Café", "“Café” costs 5 € — why?"),
    ("windows1251.eml", "Иван", "Заказ", "Здравствуйте, где мой заказ?"),
])
def test_legacy_charsets(name: str, sender: str, subject: str, text: str) -> None:
    parsed = mail(name)
    assert parsed.sender is not None and parsed.sender.name == sender
    assert (parsed.subject, parsed.text, parsed.full_text) == (subject, text, text)


def test_an_html_only_mail_reads_as_plain_text() -> None:
    parsed = mail("html_only.eml")
    assert parsed.body_type == "text/html"
    assert parsed.text == "Hello,\n\nMy invoice INV-77 is wrong:\n\nItem    Price\nRouter  €49\n\nSee the invoice."
    assert parsed.sender is not None
    assert (parsed.sender.address, parsed.sender.name) == ("renee.dupont@example.fr", "Renée Dupont")
    assert parsed.subject == "Facture erronée — INV-77"


@pytest.mark.parametrize("raw, text", [
    ("=?GB2312?B?1cXI/Q==?=", "张三"),
    ("=?gb2312?B?" + base64.b64encode("王喆".encode("gb18030")).decode() + "?=", "王喆"),
    ("=?utf-8?q?caf=C3=A9_cr=C3=A8me?=", "café crème"),
    ("=?UTF-8?B?5Zue5aSN?= =?UTF-8?B?77ya?= x", "回复： x"),      # adjacent words join
    ("=?big5?B?" + base64.b64encode("商品".encode("big5")).decode() + "?=", "商品"),
    ("=?x-no-such-charset?B?dGVzdA==?=", "test"),
    ("=?utf-8?B?not base64?=", "=?utf-8?B?not base64?="),
    ("plain\r\n folded", "plain folded"),
])
def test_header_words(raw: str, text: str) -> None:
    assert decode_header(raw) == text


def test_bytes_that_are_utf8_win_over_a_wrong_label() -> None:
    assert decode_bytes("订单".encode(), "gb2312") == "订单"
    assert decode_bytes("Müller".encode(), "iso-8859-1") == "Müller"
    assert decode_bytes(b"\xff\xfe\xfd", "utf-8").count("\ufffd") >= 1


# --- attachments -------------------------------------------------------------------------------

def test_attachments_and_inline_images() -> None:
    parsed = mail("attachments.eml")
    assert parsed.text == "The router arrived broken, photos attached."
    got = [(a.filename, a.content_type, a.size, a.sha256, a.inline, a.content_id) for a in parsed.attachments]
    assert got == [
        ("photo1.png", "image/png", 2048,
         "e173e09300390db852a4f6d32f10018f9b8605bf860ad243d70ccb5a6a81b5fd", True, "photo1@example.de"),
        ("報價單 2024.pdf", "application/pdf", 5000,                       # RFC 2231 name
         "7eefe3d180f10da96464a444db6545b5392acd1f305c78473968148f9ca96b47", False, None),
        ("合同.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", 100,
         "2c01541740543ac1004de85f5287bad86a636326fcb23069b55ee632b55bcc66", False, None),  # GB2312 words
    ]
    for attachment in parsed.attachments:
        assert len(attachment.data) == attachment.size
        assert hashlib.sha256(attachment.data).hexdigest() == attachment.sha256
    assert parsed.attachments[0].data.startswith(b"\x89PNG\r\n\x1a\n")


def test_an_attachment_over_the_limit_is_reported_not_refused() -> None:
    parsed = mail("big_attachment.eml")
    limit = 256 * 1024
    assert [(a.filename, a.size) for a in parsed.oversized(limit)] == [("logs.zip", 300_000)]
    assert parsed.attachments[0].sha256 == "6a338699cc9ec0b2e0d725ca4758efa71021f4b843fb3fd2ccbc024cbb314e56"
    assert mail("attachments.eml").oversized(limit) == ()


# --- people and machines -----------------------------------------------------------------------

def test_out_of_office_refers_to_our_message() -> None:
    verdict = classify(mail("out_of_office.eml"), OURS)
    assert (verdict.kind, verdict.refers_to) == ("auto_reply", OUR_ID)


def test_a_delivery_status_report_names_the_bounced_message() -> None:
    parsed = mail("bounce_dsn.eml")
    assert parsed.report is not None
    assert (parsed.report.action, parsed.report.status, parsed.report.recipient) == \
        ("failed", "5.1.1", "nobody@nowhere.example")
    verdict = classify(parsed, OURS)
    assert (verdict.kind, verdict.refers_to) == ("bounce", OUR_ID)
    assert parsed.attachments == ()           # the report's parts are the report, not files


def test_an_exchange_bounce_quotes_the_whole_original() -> None:
    verdict = classify(mail("bounce_exchange.eml"), OURS)
    assert (verdict.kind, verdict.refers_to) == ("bounce", "cg.20240301.0002@support.example.com")


def test_list_mail() -> None:
    parsed = mail("list_mail.eml")
    assert classify(parsed, OURS).kind == "list"
    # Let through, it is still bulk mail nobody may answer automatically (RFC 3834).
    assert classify(parsed, OURS, lists_are_noise=False).kind == "auto_reply"


def test_our_own_mail_coming_back() -> None:
    verdict = classify(mail("own_address.eml"), OURS)
    assert verdict.kind == "own"


@pytest.mark.parametrize("extra, kind", [
    ("Auto-Submitted: auto-generated\n", "auto_reply"),
    ("Auto-Submitted: no\n", "person"),
    ("X-Autorespond: yes\n", "auto_reply"),
    ("Precedence: junk\n", "auto_reply"),
    ("Precedence: list\n", "list"),
    ("Return-Path: <>\nSubject: Mail delivery failed: returning message to sender\n", "bounce"),
])
def test_machine_signals(extra: str, kind: str) -> None:
    raw = (f"From: a@example.org\nTo: support@example.com\nMessage-ID: <m.1@example.org>\n{extra}"
           "In-Reply-To: <" + OUR_ID + ">\n\nhello\n").encode()
    assert classify(parse_message(raw), OURS).kind == kind


# --- dedupe, threading, Inbound ----------------------------------------------------------------

def test_a_redelivery_has_the_same_client_id() -> None:
    first, second = mail("duplicate_a.eml"), mail("duplicate_b.eml")
    assert first.header("received") != second.header("received")
    assert first.inbound("email") == second.inbound("email")
    assert first.inbound("email") == Inbound(
        channel="email", address="john.doe@gmail.com", text="The reset link says it has expired.",
        client_id="CAF3x9YqDUPLICATE@mail.gmail.com", name="John Doe",
        profile={"email": "john.doe@gmail.com"})


def test_a_reply_with_only_a_subject_token() -> None:
    parsed = mail("token_only_reply.eml")
    assert lookup_ids(parsed) == ()
    assert find_token(parsed.subject) == "K7M3QX"                 # written lower case
    assert parsed.text == "还有一个问题：能开增值税发票吗？"


def test_tokens() -> None:
    rng = random.Random(7)
    tokens = {new_token(rng.choice) for _ in range(200)}
    assert len(tokens) == 200
    assert all(len(t) == 6 and set(t) <= set(ALPHABET) for t in tokens)
    assert not set(ALPHABET) & set("0O1IL2Z5S8B")
    assert new_token() != new_token()


@pytest.mark.parametrize("subject, token, base", [
    ("Re: Order 1042 [#K7M3QX]", "K7M3QX", "Order 1042"),
    ("RE: AW: Fwd: 回复: 答复： 转发: Order 1042 [ #k7m3qx ]", "K7M3QX", "Order 1042"),
    ("Re[2]: Order [#AAAAAA] [#CDEFGH]", "CDEFGH", "Order"),
    ("Re: Order [#AB12CD]", None, "Order [#AB12CD]"),            # look-alikes are no token
    ("Order 1042", None, "Order 1042"),
    ("", None, ""),
])
def test_token_extraction_and_base_subject(subject: str, token: str | None, base: str) -> None:
    assert find_token(subject) == token
    assert base_subject(subject) == base


def test_reply_subjects() -> None:
    assert reply_subject("Re: Re: RE: Order 1042", "K7M3QX") == "Re: Order 1042 [#K7M3QX]"
    assert reply_subject("回复：Re: 订单问题 [#K7M3QX]", "K7M3QX") == "Re: 订单问题 [#K7M3QX]"
    assert reply_subject("", "K7M3QX") == "Re: [#K7M3QX]"


# --- quoting rules beyond the corpus -----------------------------------------------------------

@pytest.mark.parametrize("body, new", [
    ("ok\n\n________________________________\nFrom: Support <s@example.com>\nSent: Friday\nTo: me\n"
     "Subject: x\n\nold", "ok"),                                            # Outlook (new)
    ("好的\n\n-------- 原始邮件 --------\n发件人：客服\n日期：2024年3月1日\n\n旧的", "好的"),  # Android
    ("可以\n\n客服中心 <support@example.com> 于2024年3月1日周五 10:00写道：\n\n> 旧的", "可以"),  # Gmail zh
    ("Ja\n\nAm 01.03.2024 um 10:00 schrieb Support <support@example.com>:\n> alt", "Ja"),  # library: de
    ("Top\n> quoted\nmy inline answer\n> more", "Top\nmy inline answer"),
    ("From: my phone, sorry for typos\nIt is broken.", "From: my phone, sorry for typos\nIt is broken."),
    ("Hi\n\nThanks, but it still fails.\nBob", "Hi\n\nThanks, but it still fails.\nBob"),
    ("谢谢\n\n发自我的华为手机", "谢谢"),
    ("-----Original Message-----\nFrom: a\nSent: b\n\nold", ""),          # nothing new
    ("", ""),
])
def test_quoting_rules(body: str, new: str) -> None:
    assert split_reply(body) == new


# --- malformed input and random bytes ----------------------------------------------------------

def test_truncated_mime() -> None:
    parsed = mail("malformed_truncated.eml")
    assert parsed.text == "Hello, my order is missing"
    assert "CloseBoundaryNotFoundDefect" in parsed.defects


def test_a_wrong_charset_label_and_a_cut_attachment() -> None:
    parsed = mail("malformed_mislabelled.eml")
    assert parsed.text == "退款什么时候到账？"          # says UTF-8, is GBK
    assert parsed.subject == "test refund"             # unknown charset in an encoded word
    assert parsed.sender is not None and parsed.sender.name == "张三"
    assert parsed.date is None                         # "not a date"
    assert [(a.filename, a.data) for a in parsed.attachments] == [("a.bin", bytes(range(10)))]


@pytest.mark.parametrize("raw", [b"", b"   \r\n", b"just some text\nwith lines\n",
                                 b"\x00\x01\x02garbage", "From: a@b.c\n\nhi"])
def test_what_is_not_mail_is_rejected(raw: bytes) -> None:
    with pytest.raises(MailRejected):
        parse_message(raw)  # type: ignore[arg-type]


def test_inbound_needs_a_sender() -> None:
    with pytest.raises(MailRejected):
        parse_message(b"Subject: no sender\n\nhello").inbound("email")


def _check(raw: bytes) -> None:
    try:
        parsed = parse_message(raw)
    except MailRejected:
        return
    classify(parsed, OURS)
    lookup_ids(parsed)
    for text in (parsed.text, parsed.full_text, parsed.subject, *(v for _, v in parsed.headers)):
        assert not any("\ud800" <= c <= "\udfff" for c in text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_random_bytes_never_raise_anything_else(raw: bytes) -> None:
    _check(raw)


_SEEDS = [p.read_bytes() for p in sorted(MAIL.glob("*.eml")) if p.stat().st_size < 20_000]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_SEEDS), st.lists(st.tuples(st.integers(0, 20_000), st.integers(0, 40), st.binary(max_size=12)),
                                         max_size=12))
def test_damaged_real_mail_never_raises(seed: bytes, edits: list[tuple[int, int, bytes]]) -> None:
    raw = bytearray(seed)
    for at, cut, insert in edits:
        at %= len(raw) + 1
        raw[at:at + cut] = insert
    _check(bytes(raw))


def test_trace_headers_alone_do_not_make_mail() -> None:
    # What our listener (Return-Path) and the servers on the way (Received) put on top of any bytes.
    for trace in (b"Return-Path: <>\r\n", b"Return-Path: <a@b.example>\r\nReceived: from x by y\r\n"):
        with pytest.raises(MailRejected):
            parse_message(trace + b"\x8f\x01 not a header line\r\nmore noise\r\n")
    assert parse_message(b"Return-Path: <>\r\nFrom: MAILER-DAEMON@x.example\r\n\r\nbounced").sender is not None
