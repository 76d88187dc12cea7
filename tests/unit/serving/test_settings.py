"""Settings that configure security refuse a value that looks like a mistake, naming the variable, not the value."""

from __future__ import annotations

import pytest

from serving.settings import ServiceSettings, SettingsError, get_settings


@pytest.fixture()
def fresh_settings(monkeypatch):
    """get_settings() reads the environment anew for each test."""
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


@pytest.mark.parametrize("value", ["", "   ", "\t", "\n", " secret-key-123", "secret-key-123\n", "secret key 123"])
def test_a_blank_or_spaced_api_key_stops_the_server_instead_of_turning_authentication_off(fresh_settings, value):
    fresh_settings.setenv("RECSYS_API_KEY", value)
    with pytest.raises(SettingsError) as refused:
        get_settings()
    assert "RECSYS_API_KEY" in str(refused.value)
    if value.strip():
        assert value.strip() not in str(refused.value)  # never echo a key into logs


@pytest.mark.parametrize("name", ["RECSYS_SSL_CERTFILE", "RECSYS_SSL_KEYFILE"])
def test_a_blank_tls_file_is_refused(fresh_settings, name):
    fresh_settings.setenv(name, " ")
    with pytest.raises(SettingsError, match=name):
        get_settings()


def test_a_real_key_and_an_unset_key_are_accepted(fresh_settings):
    fresh_settings.delenv("RECSYS_API_KEY", raising=False)
    assert get_settings().api_key is None
    assert ServiceSettings(api_key="s3cr3t-key").api_key == "s3cr3t-key"


def test_every_setting_is_in_the_settings_tables_of_docs_serving_md():
    """ARCHITECTURE.md promises it; eight had gone missing (the event log's, the micro-batcher's)."""
    from serving.split_client import SplitSettings
    from tests.support import REPO

    text = (REPO / "docs" / "serving.md").read_text()
    names = [f"RECSYS_{name.upper()}" for name in ServiceSettings.model_fields]
    names += [f"RECSYS_SPLIT_{name.upper()}" for name in SplitSettings.model_fields]
    assert [name for name in names if f"`{name}`" not in text] == []
