"""`cloud-sync configured`: the systemd unit's ExecCondition= (0 run, 1 skip)."""

from cloud_sync.cli import main

DEVICE = '[[devices]]\nname = "pump-1"\nhost = "127.0.0.1"\n'


def test_no_cloud_section_means_skip(tmp_path, capsys):
    config = tmp_path / "gatewayd.toml"
    config.write_text(DEVICE)
    assert main(["configured", "--config", str(config)]) == 1
    assert "no [cloud] section" in capsys.readouterr().err


def test_a_cloud_section_means_run(tmp_path):
    config = tmp_path / "gatewayd.toml"
    config.write_text(DEVICE + '\n[cloud]\nurl = "https://cloud.example.com"\ntoken_file = "/nonexistent"\n')
    assert main(["configured", "--config", str(config)]) == 0


def test_a_broken_file_is_left_for_run_to_report(tmp_path):
    config = tmp_path / "gatewayd.toml"
    config.write_text("[cloud\n")
    assert main(["configured", "--config", str(config)]) == 0
    assert main(["configured", "--config", str(tmp_path / "missing.toml")]) == 0
