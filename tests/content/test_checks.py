import pytest

from portal.content.lint import BLOCKING, WARNING, LinkRules, check_link, check_version, sms_cost

WORDS = [("最佳", BLOCKING), ("国家级", BLOCKING), ("100%有效", BLOCKING), ("best in the world", BLOCKING)]
RULES = LinkRules(deny_domains=["evil.example"], shortener_domains=["bit.ly", "t.cn"])


def email(subject="春季新品", html='<p>你好</p><a href="{{ unsubscribe_url }}">退订</a>', text=""):
    return {"subject": subject, "preheader": "", "html_body": html, "text_body": text, "sms_text": "", "wecom_text": ""}


def codes(findings):
    return [(f.code, f.severity) for f in findings]


def test_clean_email_has_no_findings():
    assert check_version("email", email(), WORDS, RULES, "回T退订") == []


def test_forbidden_words_found_with_positions_in_subject_and_body():
    findings = check_version(
        "email",
        email(subject="国家级最佳产品", html='<p>效果100%有效</p><a href="{{ unsubscribe_url }}">u</a>'),
        WORDS,
        RULES,
        "",
    )
    subject_hits = [(f.detail, f.start, f.end) for f in findings if f.field == "subject"]
    assert ("国家级", 0, 3) in subject_hits and ("最佳", 3, 5) in subject_hits
    assert any(f.field == "html_body" and f.detail == "100%有效" for f in findings)


def test_english_forbidden_words_match_regardless_of_case():
    findings = check_version("email", email(subject="The BEST IN THE WORLD deal"), WORDS, RULES, "")
    assert ("forbidden_word", BLOCKING) in codes(findings)


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("javascript:alert(1)", "link_scheme"),
        ("ftp://files.example.com/a", "link_scheme"),
        ("http://192.168.1.10/offer", "link_ip"),
        ("https://[2001:db8::1]/x", "link_ip"),
        ("https://bit.ly/abc", "link_shortener"),
        ("https://t.cn/xyz", "link_shortener"),
        ("https://www.evil.example/x", "link_denied"),
    ],
)
def test_bad_links_are_blocking(url, code):
    finding = check_link(url, RULES)
    assert finding is not None and finding.code == code and finding.severity == BLOCKING


@pytest.mark.parametrize(
    "url", ["https://www.example.com/p?a=1", "http://example.org", "mailto:sales@example.com", "{{ unsubscribe_url }}"]
)
def test_good_links_pass(url):
    assert check_link(url, RULES) is None


def test_allow_list_warns_about_other_domains():
    rules = LinkRules(allow_domains=["example.com"])
    assert check_link("https://shop.example.com/x", rules) is None
    assert check_link("https://other.example.net/x", rules).severity == WARNING


def test_email_without_unsubscribe_variable_is_blocked():
    findings = check_version("email", email(html="<p>no way out</p>"), WORDS, RULES, "")
    assert ("unsubscribe_missing", BLOCKING) in codes(findings)


def test_sms_without_opt_out_text_is_blocked_and_with_it_passes():
    sms = {"sms_text": "新品上市，欢迎选购。"}
    assert ("sms_opt_out_missing", BLOCKING) in codes(check_version("sms", sms, [], RULES, "回T退订"))
    assert check_version("sms", {"sms_text": "新品上市，欢迎选购。回T退订"}, [], RULES, "回T退订") == []


def test_image_without_alt_and_long_subject_are_warnings():
    findings = check_version(
        "email", email(subject="很" * 41, html='<img src="a.png"><a href="{{ unsubscribe_url }}">u</a>'), [], RULES, ""
    )
    assert ("image_alt", WARNING) in codes(findings)
    assert ("subject_long", WARNING) in codes(findings)


def test_links_in_sms_are_checked():
    findings = check_version("sms", {"sms_text": "点击 https://bit.ly/x 领取 回T退订"}, [], RULES, "回T退订")
    assert ("link_shortener", BLOCKING) in codes(findings)


@pytest.mark.parametrize(
    ("text", "encoding", "segments"),
    [
        ("a" * 160, "GSM-7", 1),
        ("a" * 161, "GSM-7", 2),
        ("a" * 306, "GSM-7", 2),
        ("a" * 307, "GSM-7", 3),
        ("€" * 80, "GSM-7", 1),
        ("€" * 81, "GSM-7", 2),  # extension characters count twice
        ("中" * 70, "UCS-2", 1),
        ("中" * 71, "UCS-2", 2),
        ("中" * 134, "UCS-2", 2),
        ("中" * 135, "UCS-2", 3),
        ("Hi 王", "UCS-2", 1),
        ("😀" * 35, "UCS-2", 1),
        ("😀" * 36, "UCS-2", 2),
        ("", "GSM-7", 0),
    ],
)
def test_sms_segments(text, encoding, segments):
    cost = sms_cost(text)
    assert (cost.encoding, cost.segments) == (encoding, segments)
