
from tests.support.paths import ROOT


def test_ci_runs_exactly_the_readme_test_command() -> None:
    command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert command.endswith(".venv/bin/python -m pytest")
    assert f"\n{command}\n" in (ROOT / "README.md").read_text()


def test_readme_commands_name_existing_scripts_and_configs() -> None:
    readme = (ROOT / "README.md").read_text()
    for script in ("train.py", "evaluate.py"):
        assert f"scripts/{script}" in readme and (ROOT / "scripts" / script).is_file()
    for group, option in (
        ("experiment", "demo"),
        ("experiment", "seed_replica"),
        ("trainer", "gpu"),
        ("trainer", "ddp"),
        ("launcher", "local"),
    ):
        assert f"{group}={option}" in readme
        assert (ROOT / "conf" / group / f"{option}.yaml").is_file()
