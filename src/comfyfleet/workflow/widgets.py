"""Which saved widget value belongs to which input: the frontend's widget layout of a class.

A UI-format node saves its widgets' values positionally (``widgets_values``), one per widget
the frontend built, and the frontend builds more widgets than the class has inputs. Rebuilding
that list from the catalogue (``object_info``), as the frontend does when it creates a node:

* widgets follow the class's inputs (required, then optional, in ``input_order``); an input is a
  widget when its type is INT/FLOAT/STRING/BOOLEAN/a combo and it is not ``forceInput``;
* an INT asking for ``control_after_generate`` (or saying nothing and named ``seed`` or
  ``noise_seed``), or a combo asking for it, is followed by its control ("randomize",
  "fixed", ...), a value of the frontend's own;
* a file combo with an upload flag (``image_upload``, ``audio_upload``, ...) is followed by its
  upload button's value, a remote list asking for a refresh button by that one's, both of which
  older saves leave out at the end;
* a V3 dynamic combo (``COMFY_DYNAMICCOMBO_V3``) is followed by the widgets of the option its
  value selects, named ``<combo>.<input>``; a V3 autogrow group adds sockets only
  (``<group>.<prefix><n>``), which arrive as links;
* some classes get widgets of the frontend's own after theirs (`FRONTEND_ONLY_WIDGETS`:
  previews, players, CustomCombo's option list), whose trailing values carry no input;
* an input the browser itself makes while exporting (`BROWSER_MADE`: a webcam capture, a
  microphone recording, a render of the 3D viewport) cannot be converted: refused, named.

The frontend loads the list by position, so that comes first. A list that does not fit the
layout was saved with another version of the class: one that stops short is read as the
frontend reads it (the widgets it lacks keep their defaults) when every value fits the widget
it lands on; one that is too long, or one whose values do not fit, is settled by the node's
``widgets_values_named`` when the file has them (the official templates do), else refused.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from comfyfleet.workflow.nodeinfo import UPLOAD_FLAGS, InputSpec, input_specs

AUTOGROW, DYNAMIC_COMBO = "COMFY_AUTOGROW_V3", "COMFY_DYNAMICCOMBO_V3"

# Widgets the frontend appends to these classes of its own (previews, players): so many
# trailing ``widgets_values`` entries carry no input (checked against the official templates
# saved with ``widgets_values_named``). None: any number (CustomCombo's hidden index and its
# growing list of options, which its frontend keeps after the combo).
FRONTEND_ONLY_WIDGETS: dict[str, int | None] = {
    "PreviewAny": 3,  # the markdown/plain-text preview
    "SaveGLB": 1,  # the 3D preview's image
    "Preview3D": 1,
    "LoadAudio": 1,  # the audio player
    "GetImageSize": 1,  # the size display
    "CustomCombo": None,
}

# Inputs whose value the browser makes at export time (it captures, records or renders and
# uploads the result): a saved workflow holds no value ComfyUI could use.
BROWSER_MADE = {
    "WEBCAM": "a webcam capture",
    "AUDIO_RECORD": "a microphone recording",
    "LOAD_3D": "a render of the 3D viewport",
    "LOAD_3D_ANIMATION": "a render of the 3D viewport",
}

CONTROL = "<control_after_generate>"
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})
_PLAIN_DEFAULTS: dict[str, Any] = {"INT": 0, "FLOAT": 0, "STRING": "", "BOOLEAN": False}
UPLOAD = "<upload>"
_MISSING = object()


class LayoutError(ValueError):
    """The saved values cannot be laid onto this class's widgets (the message says why);
    ``version_skew`` when the likely cause is a node saved with another version of its class."""

    def __init__(
        self, message: str, input_name: str | None = None, *, version_skew: bool = True
    ) -> None:
        super().__init__(message)
        self.input_name = input_name
        self.version_skew = version_skew


def has_control(spec: InputSpec) -> bool:
    """The frontend's rule for a "control after generate" widget after this one."""
    flag = spec.options.get("control_after_generate")
    if spec.type == "INT":
        return bool(flag) if flag is not None else spec.name in ("seed", "noise_seed")
    return spec.is_combo and bool(flag)


@dataclass
class _Walk:
    """One pass over a class's widgets; ``value_of(name, position)`` reads a saved value."""

    value_of: Callable[[str, int], Any]
    values: dict[str, Any] = field(default_factory=dict)
    slots: list[str] = field(default_factory=list)
    specs: list[InputSpec | None] = field(default_factory=list)  # per slot; None: the frontend's
    missing: list[str] = field(default_factory=list)  # required widgets without a saved value

    def run(self, specs: Sequence[InputSpec], prefix: str = "") -> None:
        for spec in specs:
            name = prefix + spec.name
            if isinstance(spec.type, str) and spec.type in BROWSER_MADE:
                raise LayoutError(
                    f"input {name!r} is {BROWSER_MADE[spec.type]}, which the frontend makes in "
                    "the browser while it exports",
                    name,
                    version_skew=False,
                )
            if spec.type == AUTOGROW:
                _check_autogrow(spec, name)
            elif spec.type == DYNAMIC_COMBO:
                value = self._take(name, spec)
                self.run(_option_specs(spec, name, value), prefix=f"{name}.")
            elif spec.is_dynamic:
                raise LayoutError(
                    f"input {name!r} is a {spec.type}, which this converter does not know",
                    name,
                    version_skew=False,
                )
            elif spec.is_widget:
                self._take(name, spec)
                if has_control(spec):
                    self.slots.append(CONTROL)
                    self.specs.append(None)
                for _button in range(_buttons(spec)):
                    self.slots.append(UPLOAD)
                    self.specs.append(None)

    def _take(self, name: str, spec: InputSpec) -> Any:
        value = self.value_of(name, len(self.slots))
        self.slots.append(name)
        self.specs.append(spec)
        if value is not _MISSING:
            self.values[name] = value
        elif spec.required:
            self.missing.append(name)
        return value


def _buttons(spec: InputSpec) -> int:
    """Buttons the frontend puts after a file combo: upload (an upload flag), and refresh for a
    remote list that asks for it; a remote list with neither keeps one optional trailing slot,
    as this converter always gave it."""
    upload = any(spec.options.get(flag) for flag in UPLOAD_FLAGS)
    remote = spec.options.get("remote")
    refresh = isinstance(remote, Mapping) and bool(remote.get("refresh_button"))
    if not upload and remote is not None and not refresh:
        return 1
    return int(upload) + int(refresh)


def _check_autogrow(spec: InputSpec, name: str) -> None:
    template = (spec.options.get("template") or {}).get("input") or {}
    for group in template.values():
        for sub in input_specs({"input": {"required": group}}).values():
            if sub.is_widget or sub.is_dynamic:
                raise LayoutError(
                    f"input {name!r} grows widgets ({sub.name!r}) whose number the saved "
                    "values do not tell",
                    name,
                    version_skew=False,
                )


def _option_specs(spec: InputSpec, name: str, value: Any) -> list[InputSpec]:
    """The inputs the dynamic combo's chosen option adds (the default option's when unsaved)."""
    options = [o for o in spec.options.get("options") or [] if isinstance(o, Mapping)]
    if value is _MISSING:
        value = spec.options.get("default", options[0].get("key") if options else None)
    chosen = next((o for o in options if o.get("key") == value), None)
    if chosen is None:
        keys = [o.get("key") for o in options]
        raise LayoutError(f"input {name!r} is {value!r}, which is none of {keys}", name)
    return list(input_specs({"input": chosen.get("inputs") or {}}).values())


def read_named(
    info: Mapping[str, Any], named: Mapping[str, Any], provided: Collection[str] = ()
) -> dict[str, Any]:
    """Widget values saved by name: only names the class has are kept, and every required
    widget must have one unless ``provided`` otherwise (linked), or `LayoutError`."""
    walk = _Walk(lambda name, _pos: named.get(name, _MISSING))
    walk.run(list(input_specs(info).values()))
    missing = [name for name in walk.missing if name not in provided]
    if missing:
        raise LayoutError(f"has no saved value for input {missing[0]!r}", missing[0])
    return walk.values


def read_positional(info: Mapping[str, Any], values: Sequence[Any]) -> dict[str, Any]:
    """Positional ``widgets_values`` laid onto the class's widgets, or `LayoutError` when their
    number does not fit (the node was saved with another version of its class).

    A list that stops short (saved before the class gained trailing widgets) is read as the
    frontend loads it, the missing widgets at their defaults, but only when every saved value
    fits the widget it lands on: a value out of place (a seed's control missing, say) would
    shift all that follow."""

    def value_of(_name: str, pos: int) -> Any:
        return values[pos] if pos < len(values) else _MISSING

    walk = _Walk(value_of)
    walk.run(list(input_specs(info).values()))
    slots = walk.slots
    optional_tail = next((i for i, s in enumerate(reversed(slots)) if s != UPLOAD), len(slots))
    extra = FRONTEND_ONLY_WIDGETS.get(str(info.get("name")), 0)
    most = len(values) if extra is None else len(slots) + extra
    short = len(values) < len(slots) - optional_tail
    if short and _all_fit(walk, values):
        return walk.values | _defaults(walk, len(values))
    if short or len(values) > most:
        raise LayoutError(
            f"has {len(values)} widget values but this ComfyUI's {info.get('name')} has "
            f"{len(slots)} widgets"
        )
    return walk.values


def _all_fit(walk: _Walk, values: Sequence[Any]) -> bool:
    return all(_fits(walk.slots[i], walk.specs[i], value) for i, value in enumerate(values))


def _fits(slot: str, spec: InputSpec | None, value: Any) -> bool:
    """Could the frontend's widget at this slot hold this value?"""
    if slot == CONTROL:
        return value in CONTROL_VALUES
    if spec is None:  # an upload button: any value
        return True
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if spec.is_combo or spec.type == DYNAMIC_COMBO:
        options = spec.combo_options
        if spec.type == DYNAMIC_COMBO:
            options = [o.get("key") for o in spec.options.get("options") or []]
        return value in options if options else isinstance(value, str) or number
    if spec.type == "INT":
        return number and float(value).is_integer()
    if spec.type == "FLOAT":
        return number
    if spec.type == "BOOLEAN":
        return isinstance(value, bool)
    return isinstance(value, str)  # STRING


def _defaults(walk: _Walk, start: int) -> dict[str, Any]:
    """The values the frontend gives the widgets from ``start`` on when it creates them."""
    found: dict[str, Any] = {}
    for slot, spec in zip(walk.slots[start:], walk.specs[start:], strict=True):
        if spec is None:
            continue
        if "default" in spec.options:
            found[slot] = spec.options["default"]
        elif spec.type == DYNAMIC_COMBO and spec.options.get("options"):
            found[slot] = spec.options["options"][0].get("key")
        elif spec.is_combo and spec.combo_options:
            found[slot] = spec.combo_options[0]
        elif spec.type in _PLAIN_DEFAULTS:
            found[slot] = _PLAIN_DEFAULTS[spec.type]
        else:
            raise LayoutError(f"has no saved value for input {slot!r}, which has no default", slot)
    return found


def widget_slots(info: Mapping[str, Any]) -> tuple[list[str], int]:
    """The names behind each ``widgets_values`` position (dynamic combos at their default), and
    how many trailing ones may be absent (upload buttons). Control and upload positions carry
    the placeholder names `CONTROL` and `UPLOAD`."""
    walk = _Walk(lambda _name, _pos: _MISSING)
    walk.run(list(input_specs(info).values()))
    tail = next((i for i, s in enumerate(reversed(walk.slots)) if s != UPLOAD), len(walk.slots))
    return walk.slots, tail
