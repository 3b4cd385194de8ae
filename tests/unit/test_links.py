"""Link targets: the hosts a message links to and embeds from, however the markup is written
and the body encoded, blind to paths, tokens, case and the IDNA form of a host."""

from __future__ import annotations

import base64
import html
import quopri

import pytest

from sendguard.content import fingerprints
from sendguard.links import MAX_LISTED, decode, describe_change, encode, targets_of_html


def html_message(body: str, cte: str = "8bit", charset: str = "utf-8") -> bytes:
    data = body.encode(charset)
    if cte == "base64":
        data = base64.encodebytes(data)
    elif cte == "quoted-printable":
        data = quopri.encodestring(data)
    return (
        b"From: shop@example.com\r\nTo: ann@example.org\r\nSubject: Spring\r\n"
        b"MIME-Version: 1.0\r\n"
        + f"Content-Type: text/html; charset={charset}\r\n".encode()
        + f"Content-Transfer-Encoding: {cte}\r\n\r\n".encode()
        + data
    )


def links(body: str, cte: str = "8bit", charset: str = "utf-8") -> str:
    return fingerprints(html_message(body, cte, charset)).links


@pytest.mark.parametrize(
    "anchor",
    [
        '<a href="https://shop.example/p">x</a>',
        "<a href='https://shop.example/p'>x</a>",
        "<a href=https://shop.example/p>x</a>",
        '<A HREF="https://shop.example/p">x</A>',
        '<a class="b"\r\n   href = "https://shop.example/p">x</a>',
        '<a href="https&#58;//shop&#46;example/p?a=1&amp;b=2">x</a>',
        '<a href="https://SHOP.Example:443/p">x</a>',
        '<a href="https://user@shop.example./p">x</a>',
        '<a href="//shop.example/p">x</a>',
        '<area shape="rect" href="https://shop.example/p">',
        # as browsers read them (the WHATWG URL standard; headless Chromium followed each)
        '<a href="https:///shop.example/p">x</a>',
        '<a href="HTTPS:shop.example/p">x</a>',
        '<a href="https:\\\\\\shop.example/p">x</a>',
        '<a href="ht&#9;tps://sh&#10;op.example/p">x</a>',
        '<a href="&#1;https://shop.example/p&#0;">x</a>',
    ],
)
def test_every_way_of_writing_a_link_reads_as_its_host(anchor: str) -> None:
    assert links(f"<p>Our spring sale {anchor}</p>") == "link:shop.example"


@pytest.mark.parametrize(
    "tag",
    [
        '<img src="https://cdn.example/a.png">',
        "<IMG SRC=https://cdn.example/a.png>",
        '<iframe src="https://cdn.example/v"></iframe>',
        '<video poster="https://cdn.example/p.jpg"></video>',
        '<video><source src="https://cdn.example/v.mp4"></video>',
        '<script src="https://cdn.example/s.js"></script>',
        '<link rel="stylesheet" href="https://cdn.example/s.css">',
        '<img srcset="https://cdn.example/a.png 1x, https://cdn.example/b.png 2x">',
        '<td background="https://cdn.example/bg.png">',
        "<div style=\"background: url('https://cdn.example/bg.png')\">",
        '<div style="background: uRl(https://cdn.example/bg.png)">',
        '<td style="background-image: url(&quot;https://cdn.example/bg.png&quot;)">',
    ],
)
def test_what_a_client_fetches_is_an_embed(tag: str) -> None:
    assert links(f"<p>Look {tag}</p>") == "embed:cdn.example"


def test_css_in_a_style_block_embeds_and_reads_as_text() -> None:
    # A style block's text is text to the content fingerprint (markup stripped, not its
    # contents), so its URL is a bare one there too: one more pair, never one less.
    body = "<style>.x { background: URL(https://cdn.example/bg.png) }</style><p>Look</p>"
    assert links(body) == "embed:cdn.example link:cdn.example"


def test_mailto_counts_by_the_domain_of_its_address() -> None:
    body = '<a href="mailto:Help@Shop.EXAMPLE?subject=Hi">write</a> or MAILTO:ann@other.example'
    assert links(body) == "mailto:other.example mailto:shop.example"


def test_relative_urls_and_hostless_schemes_count_for_nothing() -> None:
    body = (
        '<a href="/account">a</a> <a href="#top">t</a> <img src="cid:logo@x">'
        ' <img src="data:image/png;base64,AAAA"> <a href="tel:+4930123">c</a>'
        ' <a href="javascript:void(0)">j</a> <img data-src="https://lazy.example/x.png">'
    )
    assert links(body) == ""


def test_href_in_the_text_is_not_a_link() -> None:
    assert links("<p>set href=https to anything</p>") == ""


def test_paths_and_per_recipient_tokens_do_not_matter() -> None:
    ann = '<a href="https://click.esp.example/ls/click?upn=ann-123">x</a>'
    bob = '<a href="https://click.esp.example/ls/click?upn=bob-456&amp;x=1">x</a>'
    assert links(ann) == links(bob) == "link:click.esp.example"


def test_a_unicode_host_and_its_punycode_are_one_host() -> None:
    unicode_host = links('<a href="https://Bücher.example/neu">x</a>')
    punycode = links('<a href="https://xn--bcher-kva.example/neu">x</a>')
    assert unicode_host == punycode == "link:xn--bcher-kva.example"


@pytest.mark.parametrize("cte", ["8bit", "quoted-printable", "base64"])
@pytest.mark.parametrize("charset", ["utf-8", "iso-8859-1", "utf-16"])
def test_any_transfer_encoding_and_charset_reads_the_same_hosts(cte: str, charset: str) -> None:
    if charset == "utf-16" and cte == "8bit":
        pytest.skip("UTF-16 has NUL bytes: not 8bit-safe")
    body = (
        '<p>Grüße, <a href="https://shop.example/p?u=1">hier</a>'
        ' <img src="https://cdn.example/a.png"> https://plain.example/x</p>'
    )
    assert links(body, cte, charset) == ("embed:cdn.example link:plain.example link:shop.example")


def test_plain_text_counts_bare_urls_and_multipart_reads_both_parts() -> None:
    raw = (
        b"From: shop@example.com\r\nTo: ann@example.org\r\nSubject: Spring\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        b"Shop now: https://Text.Example/spring?utm_source=x\r\n"
        b"--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        b'<p>Shop <a href="https://html.example/spring">now</a></p>\r\n'
        b"--b--\r\n"
    )
    assert fingerprints(raw).links == "link:html.example link:text.example"
    plain = b"From: a@example.com\r\nSubject: x\r\n\r\nSee https://shop.example/a and more\r\n"
    assert fingerprints(plain).links == "link:shop.example"


def test_a_message_without_links_has_an_empty_set() -> None:
    plain = b"From: a@example.com\r\nSubject: x\r\n\r\nHello there, no links here.\r\n"
    assert fingerprints(plain).links == ""


def test_the_count_of_links_does_not_matter() -> None:
    one = '<a href="https://shop.example/1">1</a>'
    assert links(one) == links(one * 5)


def test_past_max_listed_hosts_the_form_lists_the_first_and_hashes_all() -> None:
    many = {("link", f"h{i:03}.example") for i in range(MAX_LISTED + 5)}
    stored = encode(many)
    assert len(decode(stored)) == MAX_LISTED
    other = encode(many - {("link", "h104.example")} | {("link", "h999.example")})
    assert stored != other  # differs past the listed ones: the hash tells
    assert describe_change(stored, other) == (
        f"a different set of hosts past the first {MAX_LISTED}"
    )


def test_what_changed_names_added_and_removed_hosts() -> None:
    before = "embed:cdn.example link:shop.example"
    after = "embed:cdn.example link:evil.example"
    assert describe_change(before, after) == (
        "new link host evil.example; removed link host shop.example"
    )


def test_targets_of_html_reads_markup_only() -> None:
    assert targets_of_html("no markup at all") == set()
    assert targets_of_html('<a href="https://a.example">x</a>') == {("link", "a.example")}


def test_text_that_lowers_to_another_length_hides_no_link() -> None:
    # "İ" lowers to two characters: positions in `str.lower()`'s markup drift from the source's.
    source = (
        '<p>İİİİ Straße</p><A HREF="https://evil.example/x">x</a><img src=https://cdn.example/i>'
    )
    assert targets_of_html(source) == {("link", "evil.example"), ("embed", "cdn.example")}


def test_a_closing_bracket_in_an_earlier_attribute_hides_no_link() -> None:
    source = (
        '<a title="1 > 0" href="https://evil.example/x">x</a><img alt=">" src="//cdn.example/i">'
    )
    assert targets_of_html(source) == {("link", "evil.example"), ("embed", "cdn.example")}


def test_a_redirect_link_counts_the_url_it_carries() -> None:
    # Encoded once or twice, as written, as an entity; a token's %3D is no URL.
    body = (
        '<a href="https://t.example/r?u=https%3A%2F%2Fone.example%2Fp&amp;e=ann">a</a>'
        '<a href="https://www.google.com/url?q=https%253A%252F%252Ftwo.example&sa=D">b</a>'
        '<a href="https://t.example/r/https://three.example/p">c</a>'
        '<a href="https://t.example/r?u=https&#58;//four.example">d</a>'
        '<a href="https://t.example/ls/click?upn=abc3A%3D%3D">e</a>'
    )
    assert links(body) == (
        "link:four.example link:one.example link:t.example link:three.example"
        " link:two.example link:www.google.com"
    )


def test_a_form_sends_the_reader_to_its_action() -> None:
    source = '<form method="post" ACTION="https://evil.example/login"><input name=p></form>'
    assert targets_of_html(source) == {("link", "evil.example")}


def test_an_amp_part_is_read_for_links_as_html() -> None:
    # AMP for Email (text/x-amp-html) replaces the HTML where it is shown: a link in it written
    # with an entity was invisible to the bare-URL search of its text (session-11 trial).
    amp = (
        '<!doctype html><html amp4email><body><amp-img src="https://cdn.example/a.png" width="1"'
        ' height="1"></amp-img><a href="&#104;ttps://evil.example/x">Shop</a></body></html>'
    )
    raw = (
        "From: a@example.com\r\nTo: b@example.org\r\nSubject: AMP\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nShop\r\n"
        f"--b\r\nContent-Type: text/x-amp-html; charset=utf-8\r\n\r\n{amp}\r\n"
        '--b\r\nContent-Type: text/html\r\n\r\n<a href="https://shop.example/">Shop</a>\r\n'
        "--b--\r\n"
    ).encode()
    assert fingerprints(raw).links == (
        "embed:cdn.example link:cdn.example link:evil.example link:shop.example"
    )


@pytest.mark.parametrize(
    ("markup", "expected"),
    [
        # what a reader submits to or is sent to: a link
        ('<form><button formaction="https://x.example/b">Go</button></form>', "link:x.example"),
        ('<input type=submit FormAction="https://x.example/i">', "link:x.example"),
        ('<form method="post" action-xhr="https://x.example/amp">', "link:x.example"),
        ('<meta http-equiv="refresh" content="0; url=https://x.example/">', "link:x.example"),
        ("<meta content=\"5;URL='//x.example/'\" http-equiv=Refresh>", "link:x.example"),
        ('<meta http-equiv="refresh" content="0 https://x.example/">', "link:x.example"),
        ('<a href="/p" ping="https://x.example/p https://x.example/q">x</a>', "link:x.example"),
        ('<svg><a xlink:href="https://x.example/p">x</a></svg>', "link:x.example"),
        ('<a href="\\\\x.example/p">x</a>', "link:x.example"),
        ('<a href="///x.example/p">x</a>', "link:x.example"),
        ('<base href="https://x.example/">', "link:x.example"),
        # an iframe's srcdoc is a document: its markup, entities decoded, read as the message's
        (
            '<iframe srcdoc="<p><a href=&quot;https://x.example/&quot;>x</a></p>"></iframe>',
            "link:x.example",
        ),
        # outside an <svg> an <image> is an <img>: its href is read as any other, a link
        ('<image href="https://x.example/a.png">', "link:x.example"),
        # what a client fetches: an embed
        (
            '<amp-img src="https://x.example/a.png" width="1" height="1"></amp-img>',
            "embed:x.example",
        ),
        ('<object data="https://x.example/o.svg"></object>', "embed:x.example"),
        ('<embed src="https://x.example/e.svg">', "embed:x.example"),
        ('<IMG SRCSET="https://x.example/a.png 1x">', "embed:x.example"),
        ('<svg><image href="https://x.example/a.png"/></svg>', "embed:x.example"),
        ('<svg><image xlink:href="https://x.example/a.png"/></svg>', "embed:x.example"),
        ('<svg><use href="https://x.example/s.svg#i"/></svg>', "embed:x.example"),
        ('<td style="background: image-set(&quot;//x.example/a.png&quot; 1x)">', "embed:x.example"),
        (
            "<td style=\"background: -webkit-image-set('//x.example/a.png' 1x,"
            ' url(//x.example/b) 2x)">',
            "embed:x.example",
        ),
    ],
)
def test_every_link_bearing_construct_reads_its_host_and_kind(markup: str, expected: str) -> None:
    assert links(f"<p>Spring</p>{markup}") == expected


def test_css_import_and_image_set_strings_are_embeds() -> None:
    # Scheme-relative, so not a bare URL in the style block's text as well.
    body = (
        "<style>@import '//one.example/a.css'; @IMPORT\n\"//two.example/b.css\";"
        ' .h { background: image-set("//three.example/a.png" 1x, "//four.example/b.png" 2x) }'
        "</style><p>Look</p>"
    )
    assert links(body) == (
        "embed:four.example embed:one.example embed:three.example embed:two.example"
    )


def test_a_relative_url_goes_to_the_host_of_the_first_base_href() -> None:
    body = (
        '<base target="_blank"><base href="https://base.example/x/"><base href="//later.example/">'
        '<a href="/p">a</a> <a href="#top">t</a> <img src="a.png">'
    )
    assert links(body) == "embed:base.example link:base.example link:later.example"
    # no relative URL: the base is a link (its host changed is a change), nothing more
    assert links('<base href="https://base.example/"><a href="https://a.example/">a</a>') == (
        "link:a.example link:base.example"
    )


@pytest.mark.parametrize(
    "markup",
    [
        '<div data="https://x.example/">',  # `data` is an `<object>`'s only
        '<meta name="description" content="5, https://x.example/">',  # no refresh
        '<meta http-equiv="refresh" content="x; url=https://x.example/">',  # no time: ignored
        '<blockquote cite="https://x.example/">',  # not shown, not fetched
        '<img longdesc="https://x.example/d.html">',
        '<input formaction-xhr="https://x.example/">',  # no such attribute
    ],
)
def test_what_no_client_follows_counts_for_nothing(markup: str) -> None:
    assert links(f"<p>Spring</p>{markup}") == ""


def test_srcdoc_documents_are_read_three_levels_deep() -> None:
    def iframe(inner: str) -> str:
        return f'<iframe srcdoc="{html.escape(inner, quote=True)}"></iframe>'

    level = '<img src="https://x.example/a.png">'
    for _ in range(3):
        level = iframe(level)
    assert targets_of_html(level) == {("embed", "x.example")}
    assert targets_of_html(iframe(level)) == set()  # a fourth is not read


def test_tag_and_css_names_are_ascii_case_insensitive_only() -> None:
    # U+017F (long s) matches "s" under re.IGNORECASE; no browser takes it for one.
    long_s = "\u017f"
    source = (
        f'<ba{long_s}e href="https://evil.example/"><base href="https://ok.example/">'
        f'<img src=a.png><td style="x: image-{long_s}et(&quot;//evil2.example/a&quot; 1x)">'
    )
    assert targets_of_html(source) == {
        ("link", "evil.example"),  # an href anywhere is a link
        ("link", "ok.example"),
        ("embed", "ok.example"),
    }
