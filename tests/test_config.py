"""Settings: defaults < instance/config.py < environment variables."""

from portal.config import load_config


def test_report_font_path_is_empty_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv("REPORT_FONT_PATH", raising=False)
    assert load_config(str(tmp_path))["REPORT_FONT_PATH"] == ""


def test_report_font_path_is_read_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("REPORT_FONT_PATH", "/srv/fonts/NotoSansSC-Regular.ttf")
    assert load_config(str(tmp_path))["REPORT_FONT_PATH"] == "/srv/fonts/NotoSansSC-Regular.ttf"
