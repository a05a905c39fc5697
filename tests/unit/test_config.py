from pathlib import Path

from jjhub import config


def test_environment_overrides_defaults(monkeypatch):
    monkeypatch.setenv("JJHUB_DATA_DIR", "/srv/jj")
    monkeypatch.setenv("JJHUB_SSH_PORT", "2022")
    settings = config.from_environment()
    assert settings.data_dir == Path("/srv/jj")
    assert settings.ssh_port == 2022
    assert settings.database_url == "sqlite:////srv/jj/jjhub.db"


def test_image_dir_defaults_inside_the_data_dir(monkeypatch):
    monkeypatch.delenv("JJHUB_IMAGE_DIR", raising=False)
    settings = config.Settings(data_dir=Path("/d"))
    assert settings.image_dir == Path("/d/images")
