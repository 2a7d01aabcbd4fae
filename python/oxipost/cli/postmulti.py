"""postmulti(1): the multi-instance manager, Postfix 3.7's postmulti and postmulti-script.

    postmulti -l [-aRv] [-g group] [-i name]
    postmulti -p [-av] [-g group] [-i name] postfix-command...
    postmulti -x [-aRv] [-g group] [-i name] unix-command...
    postmulti -e init | create | import | destroy | deport | enable | disable | assign
              [-av] [-g group] [-i name] [-G group] [-I name] [param=value ...]

The primary instance is the default configuration directory's (/etc/postfix: MAIL_CONFIG
naming another is fatal, as in Postfix); the secondaries are the directories its
multi_instance_directories lists, each with its own main.cf giving queue_directory,
data_directory and multi_instance_name/_group/_enable. -l lists them ("%-15s %-15s %-9s
%s": name, group, y/n, config_directory). -p runs `postfix -- COMMAND` for each with
MAIL_CONFIG set: a postmulti_start_commands command is `postfix check` for a disabled
instance, postmulti_stop_commands go in reverse order and skip disabled instances, as
postmulti_control_commands skip them. -x runs any command with MAIL_CONFIG, the directory
parameters and multi_instance_* in its environment, our commands first on its PATH.

-e edits the instance list as postmulti-script does: init sets the primary's
multi_instance_wrapper and multi_instance_enable; create makes a new instance from
$meta_directory/main.cf.proto and master.cf.proto (shared install parameters cloned from
the primary where it sets them, inet services and local submission off) and imports it;
import adds an existing instance to multi_instance_directories; deport removes it from the
list (into alternate_config_directories); destroy removes a stopped, disabled instance's
files and directories; enable/disable set its multi_instance_enable; assign its name and
group. Instance names must start with "postfix-". Every directory and name is claimed by
one instance: a second claim is fatal.

Messages are Postfix's: postmulti's own as "postmulti: fatal: ..." on stderr when it is a
terminal (always in the log as postfix/postmulti), the script's as
"postfix/postmulti-script: fatal: ..." likewise. The exit status is 1 after a fatal, and
for -p/-x 1 when a command failed for any instance.
"""

from __future__ import annotations

import getopt
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

from oxipost.cli.postfix import on_terminal
from oxipost.config import DEFAULT_CONFIG_DIR, Config, ConfigError, load_config, maincf
from oxipost.log import get_logger
from oxipost.master.master import read_pid
from oxipost.qmgr.queue import QUEUE_DIRS

PROG = "postmulti"
NAME_PREFIX = "postfix-"
SAFE_PUNCT = "!@%-_=+:./"
EDIT_ACTIONS = ("create", "destroy", "import", "deport", "enable", "disable", "assign", "init")
_ADD = ("create", "import")
USAGE = (
    f"Usage:{PROG} -l [-v] [-a] [-g group] [-i instance] | "
    f"{PROG} -p [-v] [-a] [-g group] [-i instance] command... | "
    f"{PROG} -x [-v] [-a] [-i name] [-g group] command... | "
    f"{PROG} -e action [-v] [-a] [-i name] [-g group] [-I name] [-G group] [param=value ...]"
)
WRAPPER = "${command_directory}/postmulti -p --"
# What postmulti-script clones from the primary into a new instance's main.cf.
SHARED_PARAMETERS = (
    "command_directory daemon_directory meta_directory mail_owner setgid_group sendmail_path"
    " mailq_path newaliases_path html_directory manpage_directory sample_directory"
    " readme_directory shlib_directory"
).split()
_SEPARATORS = "\t\n\r, "


class Fatal(Exception):
    """postmulti's msg_fatal."""


class ScriptFatal(Exception):
    """postmulti-script's fatal (postlog -p fatal)."""


@dataclass
class Instance:
    config_dir: str
    queue_dir: str = ""
    data_dir: str = ""
    name: str = ""
    group: str = ""
    enabled: bool = False
    primary: bool = False


@dataclass
class Selection:
    kind: str = ""  # "", "all", "name", "group"
    name: str = ""


def _split(value: str) -> list[str]:
    for sep in _SEPARATORS[:-1]:
        value = value.replace(sep, " ")
    return value.split()


class Instances:
    """The primary and the secondaries in order, each directory and name claimed once."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.claims: dict[str, str] = {}
        for name in ("command_directory", "daemon_directory"):
            path = cfg.get(name)
            try:
                st = os.stat(path)
            except OSError as e:
                raise Fatal(f"{name} = '{path}': directory not found: {e.strerror}") from None
            if not stat.S_ISDIR(st.st_mode):
                raise Fatal(f"{name} = '{path}' is not a directory")
            self.claim(cfg.config_dir, name, path)
        self.list: list[Instance] = []

    def claim(self, config_dir: str, param: str, value: str) -> None:
        requestor = f"{config_dir}, {param}"
        owner = self.claims.setdefault(value, requestor)
        if owner != requestor:
            raise Fatal(
                f"instance {config_dir}, {param}={value} conflicts with instance {owner}={value}"
            )

    def claim_instance(self, ip: Instance) -> None:
        if ip.name:
            self.claim(ip.config_dir, "multi_instance_name", ip.name)
        self.claim(ip.config_dir, "config_directory", ip.config_dir)
        self.claim(ip.config_dir, "queue_directory", ip.queue_dir)
        self.claim(ip.config_dir, "data_directory", ip.data_dir)

    def load_all(self) -> None:
        cfg = self.cfg
        primary = Instance(
            cfg.config_dir,
            cfg.get("queue_directory"),
            cfg.get("data_directory"),
            cfg.get("multi_instance_name"),
            cfg.get("multi_instance_group"),
            cfg.get_bool("multi_instance_enable"),
            primary=True,
        )
        secondaries = _split(cfg.get("multi_instance_directories"))
        if not secondaries:
            primary.enabled = True  # single-instance mode
        self.append(primary)
        for path in secondaries:
            self.append(load_instance(Instance(path)))

    def append(self, ip: Instance) -> None:
        self.claim_instance(ip)
        self.list.append(ip)

    def insert(self, ip: Instance, selection: Selection) -> None:
        """Before the first secondary the selection matches (the end without one)."""
        self.claim_instance(ip)
        if selection.kind:
            for n, old in enumerate(self.list[1:], 1):
                if matches(old, selection):
                    self.list.insert(n, ip)
                    return
            if selection.kind != "all":
                raise Fatal("No matching secondary instances")
        self.list.append(ip)

    def secondaries(self) -> str:
        return " ".join(ip.config_dir for ip in self.list[1:])


def load_instance(ip: Instance) -> Instance:
    """The private parameters of ip from its main.cf, as postmulti reads them from
    `postconf -c DIR queue_directory data_directory multi_instance_...`."""
    try:
        cfg = load_config(ip.config_dir, master_cf=False)
    except ConfigError as e:
        # postconf's own complaint reaches stderr whatever it is.
        print(f"postconf: fatal: {e}", file=sys.stderr)
        raise Fatal(f"Failed to obtain all required {ip.config_dir}/main.cf parameters") from None
    ip.queue_dir = cfg.get("queue_directory")
    ip.data_dir = cfg.get("data_directory")
    ip.name = cfg.get("multi_instance_name")
    ip.group = cfg.get("multi_instance_group")
    enable = cfg.get("multi_instance_enable")
    if enable.lower() not in ("yes", "no"):
        raise Fatal(f"Unexpected {ip.config_dir}/main.cf entry: multi_instance_enable = {enable}")
    ip.enabled = enable.lower() == "yes"
    return ip


def matches(ip: Instance, selection: Selection) -> bool:
    """An instance by name (with or without the postfix- prefix, or its config_directory;
    "-" the primary) or group."""
    if selection.kind == "all":
        return True
    if selection.kind == "group":
        return bool(ip.group) and selection.name == ip.group
    if selection.kind != "name":
        return False
    name = selection.name
    if name.startswith("/") or not ip.name:
        iname = ip.config_dir
    elif not name.startswith(NAME_PREFIX) and ip.name.startswith(NAME_PREFIX):
        iname = ip.name[len(NAME_PREFIX) :]
    else:
        iname = ip.name
    return name == iname or (ip.primary and name == "-")


def _our_command_path() -> str:
    """PATH with our commands first: they live beside the interpreter (the venv's bin),
    where Postfix's postmulti puts $command_directory."""
    path = os.environ.get("PATH") or "/bin:/usr/bin:/sbin:/usr/sbin"
    return f"{os.path.dirname(sys.executable)}:{path}"


def _run(argv: list[str], env: dict[str, str]) -> int:
    try:
        return subprocess.call(argv, env=env)
    except OSError as e:
        print(f"{PROG}: fatal: execvp {argv[0]}: {e.strerror}", file=sys.stderr)
        return 1


def _postfix_argv(args: Sequence[str]) -> list[str]:
    """Our postfix(1) with args: as postmulti runs $command_directory/postfix."""
    return [sys.executable, "-m", "oxipost.cli.postfix", *args]


def iterate(cfg: Config, mode: str, reverse: bool, args: list[str], sel: Selection) -> int:
    insts = Instances(cfg)
    insts.load_all()
    order = insts.list[::-1] if reverse else insts.list
    if mode == "l":
        for ip in order:
            if matches(ip, sel):
                enabled = "y" if ip.enabled else "n"
                print(f"{ip.name or '-':<15} {ip.group or '-':<15} {enabled:<9} {ip.config_dir}")
        return 0
    check_disabled = skip_disabled = False
    if mode == "p":
        command = args[0]
        if command in _split(cfg.get("postmulti_start_commands")):
            check_disabled = True
        elif command in _split(cfg.get("postmulti_stop_commands")):
            skip_disabled, order = True, insts.list[::-1]
        elif command in _split(cfg.get("postmulti_control_commands")):
            skip_disabled = True
    status, matched = 0, False
    for ip in order:
        if (skip_disabled and not ip.enabled) or not matches(ip, sel):
            continue
        matched = True
        env = dict(os.environ, MAIL_CONFIG=ip.config_dir)
        if mode == "p":
            command_args = ["check", *args[1:]] if check_disabled and not ip.enabled else args
            argv = _postfix_argv(["--", *command_args])
        else:
            env.update(
                daemon_directory=cfg.get("daemon_directory"),
                command_directory=cfg.get("command_directory"),
                config_directory=ip.config_dir,
                queue_directory=ip.queue_dir,
                data_directory=ip.data_dir,
                multi_instance_name=ip.name,
                multi_instance_group=ip.group,
                multi_instance_enable="yes" if ip.enabled else "no",
                PATH=_our_command_path(),
            )
            argv = args
        sys.stdout.flush()
        if _run(argv, env) != 0:
            status = 1
    if not matched:
        raise Fatal("No matching instances")
    return status


def _check_names(name: str | None, group: str | None) -> None:
    def safe(s: str) -> bool:
        return all(c.isascii() and (c.isalnum() or c in SAFE_PUNCT) for c in s)

    if name:
        if not safe(name):
            raise Fatal(f"Unsafe characters in new instance name: '{name}'")
        if "/" in name:
            raise Fatal(f"Illegal '/' character in new instance name: '{name}'")
        if name != "-" and not name.startswith(NAME_PREFIX):
            raise Fatal(f"New instance name must start with '{NAME_PREFIX}'")
    if group and not safe(group):
        raise Fatal(f"Unsafe characters in '-G {group}'")


def _private_path(param: str, primary_value: str, name: str | None) -> str:
    """The primary's directory with its last component replaced by the instance name."""
    if not name:
        raise Fatal(f"Missing {param} parameter value")
    if not primary_value.startswith("/"):
        raise Fatal(
            f"Invalid default {param} parameter value: '{primary_value}': "
            "specify an absolute pathname"
        )
    base = primary_value.rstrip("/") or "/"
    parent = base.rsplit("/", 1)[0].rstrip("/")
    return f"{parent}/{name}"


def _new_instance(
    insts: Instances, action: str, params: list[str], name: str | None, group: str | None
) -> Instance:
    cfg = insts.cfg
    new = Instance("")
    _check_names(name, group)
    for arg in params:
        key, sep, value = arg.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise Fatal(f"Malformed parameter setting '{arg}'")
        attr = {"config_directory": "config_dir"}.get(key)
        if action != "import":
            attr = attr or {"queue_directory": "queue_dir", "data_directory": "data_dir"}.get(key)
        if attr is None:
            raise Fatal(f"Parameter '{key}' not valid with action {action}")
        if not value.startswith("/"):
            raise Fatal(f"Parameter setting '{key}' is not an absolute path")
        value = value.rstrip("/")
        if not value:
            raise Fatal(f"Parameter setting '{key}' is the root directory")
        setattr(new, attr, value)
    if not new.config_dir:
        new.config_dir = _private_path("config_directory", cfg.config_dir, name)
    owner = insts.claims.get(new.config_dir)
    if owner is not None:
        raise Fatal(
            f"new config_directory={new.config_dir} is already in use by instance "
            f"{owner}={new.config_dir}"
        )
    if action != "import":
        new.queue_dir = new.queue_dir or _private_path(
            "queue_directory", cfg.get("queue_directory"), name
        )
        new.data_dir = new.data_dir or _private_path(
            "data_directory", cfg.get("data_directory"), name
        )
    else:
        load_instance(new)
    return new


def _select(insts: Instances, sel: Selection, unlink: bool) -> Instance:
    if sel.kind != "name":
        raise Fatal("Select an instance via '-i name'")
    for ip in insts.list:
        if matches(ip, sel):
            break
    else:
        raise Fatal(f"No instance named {sel.name}")
    if unlink:
        if ip.primary:
            raise Fatal("Cannot remove the primary instance")
        if ip.enabled:
            raise Fatal("Cannot remove enabled instances")
        insts.list.remove(ip)
    return ip


class Script:
    """postmulti-script's work on the target instance."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.log = get_logger("postmulti-script", cfg, echo_stderr=on_terminal())

    def fatal(self, text: str) -> NoReturn:
        self.log.fatal_line(text)
        raise ScriptFatal(text)

    def edit(self, config_dir: str, requests: dict[str, str | None], **kw: bool) -> None:
        path = os.path.join(config_dir, "main.cf")
        try:
            warnings = maincf.edit(path, requests, **kw)
        except (maincf.MainCfError, OSError) as e:
            print(f"postconf: fatal: {e}", file=sys.stderr)
            raise ScriptFatal(str(e)) from None
        for warning in warnings:
            print(f"postconf: warning: {warning}", file=sys.stderr)

    def update_cfdirs(self, op: str, directory: str, secondaries: str) -> None:
        """multi_instance_directories as postmulti computed it, and the directory out of
        (del) or into (add) alternate_config_directories."""
        alt = _split(self.cfg.get("alternate_config_directories"))
        keep = [d for d in alt if d != directory]
        requests: dict[str, str | None] = {"multi_instance_directories": secondaries}
        if op == "add" and len(keep) == len(alt):
            requests["alternate_config_directories"] = " ".join([*keep, directory])
        elif op == "del" and len(keep) != len(alt):
            requests["alternate_config_directories"] = " ".join(keep)
        self.edit(self.cfg.config_dir, requests)

    def assign_names(self, ip: Instance, name: str | None, group: str | None) -> None:
        requests: dict[str, str | None] = {}
        if name is not None:
            requests["multi_instance_name"] = name
        if group is not None:
            requests["multi_instance_group"] = group
        if requests:
            self.edit(ip.config_dir, requests)

    def install(self, ip: Instance, action: str) -> None:
        """Stock main.cf and master.cf into a new instance, master.cf last: once it is
        there the instance is complete."""
        main = os.path.join(ip.config_dir, "main.cf")
        master = os.path.join(ip.config_dir, "master.cf")
        if os.path.isfile(main) and os.path.isfile(master):
            return
        if action != "create":
            for path in (main, master):
                if not os.path.isfile(path):
                    self.fatal(f"'{ip.config_dir}' lacks a {os.path.basename(path)} file")
        meta = self.cfg.get("meta_directory")
        for proto in ("main.cf.proto", "master.cf.proto"):
            if not os.path.isfile(os.path.join(meta, proto)):
                kind = proto.split(".")[0]
                self.fatal(f"Missing {kind}.cf prototype: {meta}/{proto}")
        os.makedirs(ip.config_dir, 0o755, exist_ok=True)
        os.makedirs(ip.queue_dir, 0o755, exist_ok=True)
        os.makedirs(ip.data_dir, 0o700, exist_ok=True)
        tmpdir = os.path.join(ip.config_dir, ".tmp")
        os.makedirs(tmpdir, 0o700, exist_ok=True)
        shutil.copy2(os.path.join(meta, "main.cf.proto"), os.path.join(tmpdir, "main.cf"))
        # postconf -nh: the primary's own settings, unexpanded.
        shared = {p: self.cfg.settings[p] for p in SHARED_PARAMETERS if self.cfg.settings.get(p)}
        defaults = [p for p in SHARED_PARAMETERS if p not in shared]
        if defaults:
            self.edit(tmpdir, dict.fromkeys(defaults), comment_out=True)
        self.edit(
            tmpdir,
            {
                "queue_directory": ip.queue_dir,
                "data_directory": ip.data_dir,
                "authorized_submit_users": "",
                "master_service_disable": "inet",
                **shared,
            },
        )
        shutil.copy2(os.path.join(meta, "master.cf.proto"), os.path.join(tmpdir, "master.cf"))
        os.replace(os.path.join(tmpdir, "main.cf"), main)
        os.replace(os.path.join(tmpdir, "master.cf"), master)
        try:
            os.rmdir(tmpdir)
        except OSError:
            pass

    def running(self, ip: Instance) -> bool:
        try:
            return read_pid(load_config(ip.config_dir, master_cf=False)) is not None
        except ConfigError:
            return False

    def destroy(self, ip: Instance, secondaries: str) -> None:
        if not os.path.isfile(os.path.join(ip.config_dir, "main.cf")):
            self.fatal(f"{ip.config_dir}/main.cf file not found")
        if self.running(ip):
            self.fatal(f"Instance '{ip.config_dir}' is not stopped")
        self.update_cfdirs("del", ip.config_dir, secondaries)
        for path in [os.path.join(ip.queue_dir, q) for q in QUEUE_DIRS] + [
            ip.data_dir,
            ip.queue_dir,
        ]:
            self._rmdir(path)
        for name in ("master.cf", "main.cf"):
            try:
                os.unlink(os.path.join(ip.config_dir, name))
            except OSError:
                pass
        self._rmdir(ip.config_dir)

    def _rmdir(self, path: str) -> None:
        try:
            os.rmdir(path)
        except OSError as e:
            print(f"rmdir: failed to remove '{path}': {e.strerror}", file=sys.stderr)
            self.log.warning(f"{path}: please verify contents and remove by hand")


def manage(
    cfg: Config,
    action: str,
    params: list[str],
    sel: Selection,
    name: str | None,
    group: str | None,
) -> int:
    insts = Instances(cfg)
    script = Script(cfg)
    if action == "init":
        script.edit(
            cfg.config_dir,
            {"multi_instance_wrapper": WRAPPER, "multi_instance_enable": "yes"},
        )
        return 0
    insts.load_all()
    if action in _ADD:
        target = _new_instance(insts, action, params, name, group)
        name, group = _changed(target, name, group)
        insts.insert(target, sel)
    elif action == "assign":
        target = _select(insts, sel, unlink=False)
        _check_names(name, group)
        name, group = _changed(target, name, group)
        if name is None and group is None:
            return 0
        if name:
            insts.claim(target.config_dir, "multi_instance_name", name)
    elif action in ("destroy", "deport"):
        target = _select(insts, sel, unlink=True)
    else:
        target = _select(insts, sel, unlink=False)
    wrapper = cfg.get("multi_instance_wrapper")
    if not wrapper:
        script.fatal("multi_instance_wrapper is empty, run 'postmulti -e init' first.")
    if cfg.get("multi_instance_enable") != "yes":
        script.fatal("multi_instance_enable!=yes, run 'postmulti -e init' first.")
    if action in _ADD:
        script.install(target, action)
        script.assign_names(target, name, group)
        script.update_cfdirs("del", target.config_dir, insts.secondaries())
        env = dict(os.environ, MAIL_CONFIG=target.config_dir)
        argv = _postfix_argv(["-c", target.config_dir, "set-permissions"])
        if _run(argv, env) != 0:
            return 1
    elif action == "deport":
        if not os.path.isfile(os.path.join(target.config_dir, "main.cf")):
            script.update_cfdirs("del", target.config_dir, insts.secondaries())
            return 0
        if script.running(target):
            script.fatal(f"Instance '{target.config_dir}' is not stopped")
        script.update_cfdirs("add", target.config_dir, insts.secondaries())
    elif action == "destroy":
        script.destroy(target, insts.secondaries())
    elif action in ("enable", "disable"):
        value = "yes" if action == "enable" else "no"
        script.edit(target.config_dir, {"multi_instance_enable": value})
    else:
        script.assign_names(target, name, group)
    return 0


def _changed(ip: Instance, name: str | None, group: str | None) -> tuple[str | None, str | None]:
    """The name and group assignments that change ip ("" clears one), applied to it."""
    new_name = name if name is not None and name != ip.name else None
    new_group = group if group is not None and group != ip.group else None
    if new_name is not None:
        ip.name = new_name
    if new_group is not None:
        ip.group = new_group
    return new_name, new_group


def main(argv: Sequence[str] | None = None) -> int:
    """Run postmulti with argv (default sys.argv[1:]); return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    log = get_logger(PROG)

    def fatal(text: str) -> int:
        if on_terminal():
            print(f"{PROG}: fatal: {text}", file=sys.stderr, flush=True)
        log.fatal_line(text)
        return 1

    env_dir = os.environ.get("MAIL_CONFIG")
    if env_dir is not None and env_dir != DEFAULT_CONFIG_DIR:
        return fatal(f"Non-default configuration directory: MAIL_CONFIG={env_dir}")
    try:
        opts, rest = getopt.getopt(args, "ae:g:i:G:I:lpRvx")
    except getopt.GetoptError as e:
        what = "option requires an argument" if "requires" in e.msg else "invalid option"
        print(f"{PROG}: {what} -- '{e.opt}'", file=sys.stderr)
        return fatal(USAGE)
    sel = Selection()
    selections = modes = 0
    mode = ""
    reverse = False
    name: str | None = None
    group: str | None = None
    try:
        for opt, value in opts:
            if opt == "-a":
                selections += sel.kind != "all"
                sel = Selection("all")
            elif opt == "-e":
                if value not in EDIT_ACTIONS:
                    quoted = [f"'{a}'" for a in EDIT_ACTIONS]
                    raise Fatal(
                        f"Invalid '-e' edit action '{value}'. Specify "
                        f"{', '.join(quoted[:-1])} or {quoted[-1]}"
                    )
                modes += mode != value
                mode = value
            elif opt in ("-g", "-i"):
                selections += 1
                sel = Selection("group" if opt == "-g" else "name", value)
            elif opt in ("-G", "-I"):
                assigned = "" if value == "-" else value
                if opt == "-G":
                    if group is not None:
                        raise Fatal("Specify at most one '-G' option")
                    group = assigned
                else:
                    if name is not None:
                        raise Fatal("Specify at most one '-I' option")
                    name = assigned
            elif opt in ("-l", "-p", "-x"):
                modes += mode != opt[1]
                mode = opt[1]
            elif opt == "-R":
                reverse = not reverse
            else:
                os.environ["MAIL_VERBOSE"] = ""
        editing = mode in EDIT_ACTIONS
        if selections > 1:
            raise Fatal("Specity no more than one of '-a', '-g', '-i'")
        if modes != 1:
            raise Fatal("Specify exactly one of '-e', '-l', '-p', '-x'")
        if mode == "l" and rest:
            raise Fatal("Command not allowed with '-l'")
        if mode in ("p", "x") and not rest:
            raise Fatal("Command required with '-p' or '-x' option")
        if (mode == "p" or editing) and reverse:
            raise Fatal("The '-p' and '-e' options preclude the use of '-R'")
        if mode not in (*_ADD, "assign") and (name is not None or group is not None):
            if not editing:
                raise Fatal("Cannot assign instance name or group without '-e assign'")
            raise Fatal(f"Cannot assign instance name or group with '-e {mode}'")
        if editing:
            if mode == "assign" and name is None and group is None:
                raise Fatal("Specify new instance name or group with '-e assign'")
            if mode not in _ADD and rest:
                raise Fatal(f"Parameter overrides not valid with '-e {mode}'")
        try:
            cfg = load_config(DEFAULT_CONFIG_DIR, master_cf=False)
        except ConfigError as e:
            raise Fatal(str(e)) from None
        log = get_logger(PROG, cfg)
        if editing:
            return manage(cfg, mode, rest, sel, name, group)
        return iterate(cfg, mode, reverse, rest, sel if sel.kind else Selection("all"))
    except Fatal as e:
        return fatal(str(e))
    except ScriptFatal:
        return 1


if __name__ == "__main__":
    sys.exit(main())
