import pytest

from imagegw.settings import Settings, SettingsError, all_env_names, env_name, required_env_names

REQUIRED = {name: f"value-of-{name.lower()}" for name in required_env_names()}


def test_required_settings_are_read_once_from_the_environment():
    settings = Settings.from_env(REQUIRED)
    assert settings.bucket == "value-of-imagegw_bucket"
    assert settings.url_ttl_seconds == 3600
    assert settings.log_prompts is False


def test_missing_required_settings_are_named():
    env = dict(REQUIRED)
    del env["IMAGEGW_BUCKET"], env["IMAGEGW_JOBS_TABLE"]
    with pytest.raises(SettingsError, match="IMAGEGW_BUCKET, IMAGEGW_JOBS_TABLE"):
        Settings.from_env(env)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("IMAGEGW_MAX_ATTEMPTS", "5", 5),
        ("IMAGEGW_SYNC_DEADLINE_SECONDS", "12.5", 12.5),
        ("IMAGEGW_LOG_PROMPTS", "true", True),
        ("IMAGEGW_LOG_PROMPTS", "0", False),
    ],
)
def test_typed_values(name, value, expected):
    settings = Settings.from_env({**REQUIRED, name: value})
    assert getattr(settings, name.removeprefix("IMAGEGW_").lower()) == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("IMAGEGW_MAX_ATTEMPTS", "three"),
        ("IMAGEGW_MAX_ATTEMPTS", "0"),
        ("IMAGEGW_URL_TTL_SECONDS", "-1"),
        ("IMAGEGW_URL_TTL_SECONDS", "604801"),
        ("IMAGEGW_LOG_PROMPTS", "maybe"),
        ("IMAGEGW_SYNC_DEADLINE_SECONDS", "0"),
    ],
)
def test_malformed_values_fail_at_cold_start(name, value):
    with pytest.raises(SettingsError):
        Settings.from_env({**REQUIRED, name: value})


def test_env_names_cover_every_field():
    assert env_name("bucket") == "IMAGEGW_BUCKET"
    assert set(required_env_names()) < set(all_env_names())


def test_job_settings():
    required = {name: "x" for name in required_env_names()}
    settings = Settings.from_env({**required, "IMAGEGW_JOBS_MAX_RECEIVE_COUNT": "5"})
    assert settings.jobs_max_receive_count == 5
    assert settings.jobs_ttl_seconds == 7 * 24 * 3600
    with pytest.raises(SettingsError):
        Settings.from_env({**required, "IMAGEGW_JOBS_MAX_RECEIVE_COUNT": "0"})
