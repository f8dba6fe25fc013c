"""The Sparkmagic config writer: merge, backup, restore, corrupt files, atomicity."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

from jupyter_spark_appliance.sparkmagic_config import CREDENTIAL_KEYS, SparkmagicConfig, config_path


def test_path_follows_sparkmagic_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKMAGIC_CONF_DIR", str(tmp_path))
    monkeypatch.setenv("SPARKMAGIC_CONF_FILE", "other.json")
    assert config_path() == tmp_path / "other.json"


def test_merge_keeps_user_keys_and_restore_brings_back_previous(sparkmagic_conf_dir):
    path = sparkmagic_conf_dir / "config.json"
    user = {"kernel_python_credentials": {"url": "http://theirs:8998", "username": "", "password": "",
                                          "auth": "None", "extra": "kept"},
            "session_configs": {"driverMemory": "1000M"}, "wait_for_idle_timeout_seconds": 15}
    path.write_text(json.dumps(user))
    config = SparkmagicConfig()
    assert config.write("one", "http://127.0.0.1:1111") is None
    data = json.loads(path.read_text())
    assert all(data[k]["url"] == "http://127.0.0.1:1111" for k in CREDENTIAL_KEYS)
    assert data["kernel_python_credentials"]["extra"] == "kept"
    assert data["session_configs"] == {"driverMemory": "1000M"} and data["wait_for_idle_timeout_seconds"] == 15
    assert json.loads((sparkmagic_conf_dir / "config.json.bak").read_text()) == user

    # A second appliance stacks on top; deleting the first leaves the second in place,
    # deleting the second then restores the user's original endpoint.
    config.write("two", "http://127.0.0.1:2222")
    assert config.restore("one") is False
    assert config.current_url() == "http://127.0.0.1:2222"
    assert config.restore("two") is True
    assert json.loads(path.read_text()) == user
    assert not (sparkmagic_conf_dir / ".jupyter-spark-appliance.json").exists()


def test_writing_again_never_records_our_own_url_as_the_users(sparkmagic_conf_dir):
    """Livy scaled 1 -> 0 -> 1 (or restarted on a new port) writes twice: the user's own
    endpoint and auth must still come back, and the backup must stay the user's file."""
    path = sparkmagic_conf_dir / "config.json"
    user = {k: {"url": "http://prod-livy:8998", "username": "me", "password": "pw", "auth": "Kerberos"}
            for k in CREDENTIAL_KEYS}
    path.write_text(json.dumps(user))
    config = SparkmagicConfig()
    config.write("one", "http://127.0.0.1:40001", "jsa", "s3cret")
    config.write("one", "http://127.0.0.1:40002", "jsa", "s3cret")
    creds = json.loads(path.read_text())["kernel_python_credentials"]
    assert creds == {"url": "http://127.0.0.1:40002", "username": "jsa", "password": "s3cret", "auth": "Basic_Access"}
    assert json.loads((sparkmagic_conf_dir / "config.json.bak").read_text()) == user
    assert config.restore("one") is True
    assert json.loads(path.read_text()) == user

    # With another appliance on top, a rewrite of the lower one moves it up and the chain holds.
    config.write("a", "http://127.0.0.1:1")
    config.write("b", "http://127.0.0.1:2")
    config.write("a", "http://127.0.0.1:3")
    assert config.current_url() == "http://127.0.0.1:3"
    assert config.restore("a") is True and config.current_url() == "http://127.0.0.1:2"
    assert config.restore("b") is True and json.loads(path.read_text()) == user


def test_restore_leaves_a_url_the_user_changed(sparkmagic_conf_dir):
    config = SparkmagicConfig()
    config.write("one", "http://127.0.0.1:1111")
    data = json.loads(config.path.read_text())
    data["kernel_python_credentials"]["url"] = "http://edited-by-user:8998"
    config.path.write_text(json.dumps(data))
    assert config.restore("one") is False
    assert json.loads(config.path.read_text())["kernel_python_credentials"]["url"] == "http://edited-by-user:8998"


def test_restore_removes_a_file_we_created(sparkmagic_conf_dir):
    config = SparkmagicConfig()
    config.write("one", "http://127.0.0.1:1111")
    config.write("two", "http://127.0.0.1:2222")
    assert config.restore("two") and config.current_url() == "http://127.0.0.1:1111"
    assert config.restore("one")
    assert not config.path.exists()
    assert list(sparkmagic_conf_dir.iterdir()) == []


def test_restore_keeps_keys_the_user_added_to_a_file_we_created(sparkmagic_conf_dir):
    config = SparkmagicConfig()
    config.write("one", "http://127.0.0.1:1111")
    data = json.loads(config.path.read_text())
    data["wait_for_idle_timeout_seconds"] = 30
    config.path.write_text(json.dumps(data))
    assert config.restore("one")
    assert json.loads(config.path.read_text()) == {"wait_for_idle_timeout_seconds": 30}


def test_corrupt_file_is_kept_as_backup_and_reported(sparkmagic_conf_dir):
    path = sparkmagic_conf_dir / "config.json"
    path.write_text('{"kernel_python_credentials": {')
    warning = SparkmagicConfig().write("one", "http://127.0.0.1:1111")
    assert warning and "not valid JSON" in warning
    backups = list(sparkmagic_conf_dir.glob("config.json.corrupt-*"))
    assert len(backups) == 1 and backups[0].read_text() == '{"kernel_python_credentials": {'
    assert json.loads(path.read_text())["kernel_python_credentials"]["url"] == "http://127.0.0.1:1111"


def test_a_kill_mid_write_leaves_old_or_new_never_partial(sparkmagic_conf_dir):
    """Kill a real writer process at many points; the file must always parse."""
    path = sparkmagic_conf_dir / "config.json"
    big = {f"user_key_{i}": "x" * 2000 for i in range(500)}  # ~1 MB: writes take a while
    path.write_text(json.dumps(big))
    writer = textwrap.dedent("""
        import sys
        from jupyter_spark_appliance.sparkmagic_config import SparkmagicConfig
        print("go", flush=True)
        n = 0
        while True:
            SparkmagicConfig().write("a%d" % n, "http://127.0.0.1:%d" % (1000 + n % 50000))
            n += 1
    """)
    seen_urls = set()
    for delay in [0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7]:
        proc = subprocess.Popen([sys.executable, "-c", writer], env=os.environ.copy(), stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"go"  # imported: the kill lands among writes
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        data = json.loads(path.read_text())  # never partial
        assert all(data[k] == v for k, v in big.items())
        seen_urls.add(data.get("kernel_python_credentials", {}).get("url"))
    assert len(seen_urls) > 1  # the writer did get through writes between kills
