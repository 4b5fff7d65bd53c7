"""Input checks shared by the FreeSwim nodes: errors name the node and the fix."""
from __future__ import annotations


def check_choice(node_name: str, name: str, value, options) -> None:
    """Reject a value outside a combo's options (API clients can send anything)."""
    if value not in options:
        raise ValueError(f"{node_name}: {name} {value!r} is not one of {', '.join(map(str, options))}.")
