"""Input checks shared by the FreeSwim nodes: errors name the node and the fix.

The API accepts any JSON, NaN included, and ComfyUI's range validation lets NaN
through (every comparison with it is false), so numbers are checked here before
any work starts.
"""
from __future__ import annotations

import math
from typing import Optional

from .errors import InvalidInput


def check_choice(node_name: str, name: str, value, options) -> None:
    """Reject a value outside a combo's options (API clients can send anything)."""
    if value not in options:
        raise InvalidInput(f"{node_name}: {name} {value!r} is not one of {', '.join(map(str, options))}.")


def check_number(node_name: str, name: str, value, *, minimum: Optional[float] = None,
                 maximum: Optional[float] = None, above: Optional[float] = None,
                 below: Optional[float] = None, integer: bool = False, why: str = ""):
    """``value`` as a float (int with ``integer``) when it is a finite number in range, else an
    error naming the node, the input and the accepted range."""
    kind = "a whole number" if integer else "a number"
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{node_name}: {name} must be {kind}, got {value!r}.") from None
    if isinstance(value, bool) or not math.isfinite(number) or (integer and number != int(number)):
        raise InvalidInput(f"{node_name}: {name} must be a finite {kind[2:]}, got {value!r}.")
    limits = []
    if above is not None:
        limits.append(f"above {above:g}")
    if minimum is not None:
        limits.append(f"at least {minimum:g}")
    if maximum is not None:
        limits.append(f"at most {maximum:g}")
    if below is not None:
        limits.append(f"below {below:g}")
    if ((above is not None and not number > above) or (minimum is not None and number < minimum)
            or (maximum is not None and number > maximum) or (below is not None and not number < below)):
        raise InvalidInput(f"{node_name}: {name} {value!r} is out of range: it must be "
                           f"{' and '.join(limits)}.{(' ' + why) if why else ''}")
    return int(number) if integer else number
