"""What the command-line tests share: run ``tailscope`` in this process, and check a user error."""

from tailscope.cli import main


def cli(capsys, *args):
    """(exit code, stdout, stderr) of ``tailscope *args`` in this process."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def user_error(capsys, *args, naming=None):
    """The command exits 2 with one line on stderr (naming ``naming`` when given)."""
    code, out, err = cli(capsys, *args)
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tailscope: error:"), err
    assert "internal error" not in err and "Traceback" not in err
    if naming is not None:
        assert str(naming) in err, err
    return err
