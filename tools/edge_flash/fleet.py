"""edge-flash fleet: deploy every node of an inventory in turn, with a progress bar and a
summary table. A node that fails (invalid entry, missing or busy port, a board that does not
answer) is reported and the run goes on with the next."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from serial.tools import list_ports

from edge_flash.deploy import DeployError, DeployReport, build_files, deploy
from edge_flash.device import BoardError, check_port
from edge_flash.inventory import Inventory, InventoryError, NodePlan


@dataclass(frozen=True)
class NodeResult:
    node: str
    address: str
    ok: bool
    detail: str
    seconds: float


def resolve_port(plan: NodePlan) -> str:
    """The node's port: as given, or the USB serial adapter with the node's serial number."""
    if plan.port:
        return plan.port
    if plan.serial:
        found = [p.device for p in list_ports.comports() if p.serial_number == plan.serial]
        if not found:
            raise DeployError(f"no port: no USB serial adapter with serial number {plan.serial} is connected")
        return found[0]
    raise DeployError("no port: the inventory gives neither port nor serial for this node")


def summary(report: DeployReport) -> str:
    ident = report.identity
    assert ident is not None
    return (
        f"node {ident.unit} running, {ident.channels} channels, register map {ident.register_map}, "
        f"firmware {ident.firmware}; {len(report.written)} written, {len(report.unchanged)} unchanged, "
        f"{len(report.removed)} removed"
    )


def run_fleet(
    inventory: Inventory,
    console: Console,
    *,
    deploy_node: Callable[..., DeployReport] = deploy,
    boot_timeout_s: float = 30.0,
) -> list[NodeResult]:
    plans, errors = inventory.plans()
    by_id = {p.id: p for p in plans}
    results: list[NodeResult] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("fleet", total=len(inventory.ids))
        for node_id in inventory.ids:
            started = time.monotonic()
            plan = by_id.get(node_id)
            address = plan.address if plan else "?"
            progress.update(task, description=f"{node_id}: starting")
            try:
                if plan is None:
                    raise errors[node_id]
                port = address = resolve_port(plan)
                report = deploy_node(
                    plan,
                    port,
                    inventory.firmware_dir,
                    boot_timeout_s=boot_timeout_s,
                    progress=lambda step, n=node_id: progress.update(task, description=f"{n}: {step}"),
                )
                results.append(NodeResult(node_id, address, True, summary(report), time.monotonic() - started))
            except (DeployError, BoardError, InventoryError) as exc:
                results.append(NodeResult(node_id, address, False, str(exc), time.monotonic() - started))
            except Exception as exc:  # a bug on one node must not cost the others their deploy
                results.append(
                    NodeResult(
                        node_id, address, False, f"unexpected {type(exc).__name__}: {exc}", time.monotonic() - started
                    )
                )
            mark = "[green]ok[/]" if results[-1].ok else "[red]FAILED[/]"
            console.print(f"{node_id} on {address}: {mark}")
            progress.advance(task)
    return results


def results_table(results: list[NodeResult]) -> Table:
    table = Table(title="edge-flash fleet")
    for column in ("node", "port", "result", "time"):
        table.add_column(column)
    for r in results:
        table.add_row(r.node, r.address, "[green]ok[/]" if r.ok else "[red]FAILED[/]", f"{r.seconds:.1f} s")
    return table


@dataclass(frozen=True)
class PlanCheck:
    table: Table
    invalid: dict[str, str]  # node -> why its entry cannot be deployed
    unreachable: dict[str, str]  # node -> why its port cannot be found now


def plan_table(inventory: Inventory) -> PlanCheck:
    """What a fleet run would do, checked as far as possible without touching a device or
    reading a secret (a secret's variable may well be unset where the plan is checked)."""
    plans, errors = inventory.plans(without_secrets=True)
    by_id = {p.id: p for p in plans}
    sizes: dict[str, str] = {}
    table = Table(title=f"edge-flash fleet --dry-run: {inventory.source}")
    for column in ("node", "unit", "board", "port", "modbus", "channels", "files", "config"):
        table.add_column(column)
    invalid, unreachable = {}, {}
    for node_id in inventory.ids:
        plan = by_id.get(node_id)
        if plan is None:
            invalid[node_id] = str(errors[node_id])
            table.add_row(node_id, "", "", "", "", "", "", "[red]invalid[/]")
            continue
        try:
            port = resolve_port(plan)
            check_port(port)
        except (DeployError, BoardError) as exc:
            unreachable[node_id] = str(exc)
            port = f"[yellow]{plan.address}?[/]"
        if plan.board not in sizes:
            files = build_files(plan, inventory.firmware_dir)
            sizes[plan.board] = f"{len(files)}, {sum(len(d) for d in files.values()) // 1024} KB"
        modbus = ", ".join(sorted(plan.config.get("modbus", {})))
        table.add_row(
            node_id,
            str(plan.unit),
            plan.board,
            port,
            modbus,
            ", ".join(plan.channels),
            sizes[plan.board],
            "[green]valid[/]",
        )
    return PlanCheck(table, invalid, unreachable)
