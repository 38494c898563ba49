"""What the stack prints: progress and errors on stderr, the summary (URLs, memory table) on stdout."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from modelserve.stack.memory import measure, memory_table
from modelserve.stack.processes import StackError

if TYPE_CHECKING:
    from modelserve.stack.stack import Endpoints


class Reporter:
    """Prints through rich (part of the ``gateway`` extra, which the stack needs anyway)."""

    def __init__(self) -> None:
        try:
            from rich.console import Console
        except ImportError as exc:
            raise StackError(
                "modelserve stack needs the web tier: pip install 'modelserve[gateway]'"
            ) from exc
        self.out = Console(highlight=False)
        self.err = Console(stderr=True, highlight=False)

    def info(self, message: str) -> None:
        self.err.print(f"[dim]stack:[/dim] {_escape(message)}", soft_wrap=True)

    def warning(self, message: str) -> None:
        self.err.print(f"[yellow]stack: warning:[/yellow] {_escape(message)}", soft_wrap=True)

    def error(self, message: str) -> None:
        self.err.print(f"[red]stack: error:[/red] {_escape(message)}", soft_wrap=True)

    def summary(self, endpoints: Endpoints, roles: Mapping[str, int]) -> None:
        """The URLs to call, and the memory of every process of the stack."""
        from rich.table import Table

        urls = Table(title="modelserve stack is up", title_justify="left", show_header=False)
        urls.add_column(style="bold")
        urls.add_column()
        if endpoints.nginx_url:
            urls.add_row("nginx (front door)", endpoints.nginx_url)
        urls.add_row("gateway", endpoints.gateway_url)
        urls.add_row("model server REST", endpoints.model_server_url)
        urls.add_row("model server gRPC", endpoints.model_server_grpc or "off")
        urls.add_row("logs", endpoints.log_dir)
        self.out.print(urls)
        self.out.print(memory_table(measure(roles)))
        self.out.print(
            f"POST requests to {endpoints.url}/... reach the handler. Press Ctrl-C to stop.", soft_wrap=True
        )


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
