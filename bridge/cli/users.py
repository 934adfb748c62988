"""``telecare-bridge users ...``: create users, set console passwords, disable and list users."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from bridge.cli.common import EXIT_FAILED, EXIT_USAGE, config_path, fail, load, open_cli_store

T = TypeVar("T")


def _with_store(args: argparse.Namespace, work: Callable[[Any], Awaitable[T]]) -> T:
    config = load(args)

    async def main() -> T:
        async with open_cli_store(config, config_path(args.config)) as store:
            return await work(store)

    return asyncio.run(main())


def _read_password(args: argparse.Namespace) -> str:
    """The new password: one line from stdin with --password-stdin, else typed twice at a prompt."""
    from alarm_centre.sessions import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            fail("no terminal to ask for a password; pipe it in with --password-stdin", EXIT_USAGE)
        password = getpass.getpass("New password: ")
        if getpass.getpass("Again: ") != password:
            fail("the two passwords differ", EXIT_USAGE)
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        fail(f"a password has {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters", EXIT_USAGE)
    return password


def cmd_add(args: argparse.Namespace) -> None:
    from alarm_centre.alerts.model import Role
    from alarm_centre.sessions import set_password
    from alarm_centre.store.tx import Conflict

    try:
        role = Role(args.role)
    except ValueError:
        fail(f"--role must be one of {', '.join(r.value for r in Role)}", EXIT_USAGE)
        return
    password = _read_password(args) if args.password_stdin else None

    async def work(store: Any) -> str:
        token: str = await store.users.add(args.name, role, replace=args.replace)
        if password is not None:
            await set_password(store, args.name, password)
        return token

    try:
        token = _with_store(args, work)
    except Conflict:
        fail(
            f"user {args.name!r} already exists; to give them a new role and a new API token (the old "
            f"one stops working) add --replace, or set a password with: telecare-bridge users passwd "
            f"{args.name}",
            EXIT_FAILED,
        )
    done = "replaced: new role and API token" if args.replace else "created"
    extra = " with a console password" if password is not None else ""
    print(f"user {args.name} ({role.value}) {done}{extra}; API token:")
    print(token)


def cmd_passwd(args: argparse.Namespace) -> None:
    from alarm_centre.sessions import set_password
    from alarm_centre.store.tx import NotFound

    password = _read_password(args)
    try:
        _with_store(args, lambda store: set_password(store, args.name, password))
    except NotFound:
        fail(
            f"no user {args.name!r}; create it with: telecare-bridge users add {args.name} --role ROLE",
            EXIT_FAILED,
        )
    print(f"console password set for {args.name}; their open sessions were ended")


def _cmd_disable(disabled: bool) -> Callable[[argparse.Namespace], None]:
    def command(args: argparse.Namespace) -> None:
        from alarm_centre.sessions import set_disabled
        from alarm_centre.store.tx import NotFound

        try:
            _with_store(args, lambda store: set_disabled(store, args.name, disabled))
        except NotFound:
            fail(f"no user {args.name!r}", EXIT_FAILED)
        what = "disabled (API token and console sessions stop working)" if disabled else "enabled"
        print(f"user {args.name} {what}")

    return command


def cmd_list(args: argparse.Namespace) -> None:
    from alarm_centre.sessions import list_users

    users = _with_store(args, list_users)
    print(f"{'NAME':<24} {'ROLE':<11} {'PASSWORD':<9} STATUS")
    for u in users:
        print(
            f"{u['name']:<24} {u['role']:<11} {'yes' if u['password'] else 'no':<9} "
            f"{'disabled' if u['disabled'] else 'active'}"
        )


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``users add|passwd|disable|enable|list`` to the top-level subcommands."""
    users = sub.add_parser(
        "users",
        help="manage users, API tokens and console passwords",
        description="Users sign in to the console with a password and call the API with a token. "
        "Roles: operator, supervisor, installer, admin.",
    ).add_subparsers(dest="users_command", metavar="ACTION", required=True)
    p = users.add_parser(
        "add",
        parents=[common],
        help="create a user; prints its API token as the last line",
        description="Create a user. The API token is printed as the last line. An "
        "existing user is refused unless --replace is given.",
    )
    p.add_argument("name")
    p.add_argument("--role", required=True, help="operator, supervisor, installer or admin")
    p.add_argument(
        "--replace",
        action="store_true",
        help="the user exists: give them this role and a new API token (the old one stops)",
    )
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="also set a console password, read as one line from standard input",
    )
    p.set_defaults(func=cmd_add)

    p = users.add_parser(
        "passwd",
        parents=[common],
        help="set a user's console password",
        description="Set a user's console password (argon2-hashed) and end their sessions.",
    )
    p.add_argument("name")
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password as one line from standard input instead of prompting",
    )
    p.set_defaults(func=cmd_passwd)

    p = users.add_parser("disable", parents=[common], help="stop a user's token and console sessions")
    p.add_argument("name")
    p.set_defaults(func=_cmd_disable(True))
    p = users.add_parser("enable", parents=[common], help="let a disabled user back in")
    p.add_argument("name")
    p.set_defaults(func=_cmd_disable(False))
    p = users.add_parser("list", parents=[common], help="list users, roles and whether they have a password")
    p.set_defaults(func=cmd_list)
