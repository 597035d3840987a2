"""``POST /prompt`` validation with ComfyUI 0.8.0's rules and error bodies.

This follows ``execution.validate_prompt`` / ``validate_inputs`` of ComfyUI 0.8.0 step by step,
including its quirks, because clients are written against exactly these bodies:

* values of INT/FLOAT/STRING/BOOLEAN inputs are converted in place (the queued prompt and its
  history entry carry the converted values);
* min/max and combo checks are skipped for inputs that the class validates itself
  (``LoadImage.image``: a missing file is ``custom_validation_failed``, not ``value_not_in_list``,
  and ``"subfolder/name.png"`` is allowed);
* a node with errors lists as ``dependent_outputs`` every output that failed *after* it was
  validated, as ComfyUI does;
* exceptions while validating become ``exception_during_validation`` (on the output node) or
  ``exception_during_inner_validation`` (on the linked node), with a traceback.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import Any

from comfyfleet.testing.objectinfo import Folders, NodeCatalog

ValidateFn = Callable[..., Any]

COMBO = "COMBO"
# V3 inputs that ComfyUI expands into nested inputs before validating (a handful of classes,
# none of them executed here): their inputs are accepted as given.
DYNAMIC_V3_TYPES = ("COMFY_AUTOGROW_V3", "COMFY_DYNAMICCOMBO_V3")


def _input_error(
    kind: str, message: str, name: str, details: str | None = None, **extra_info: Any
) -> dict[str, Any]:
    """One per-input error in ComfyUI's shape; ``details`` defaults to the input's name and
    ``extra_info`` always opens with it."""
    return {
        "type": kind,
        "message": message,
        "details": name if details is None else details,
        "extra_info": {"input_name": name, **extra_info},
    }


def _full_type_name(klass: type) -> str:
    module = klass.__module__
    return klass.__qualname__ if module == "builtins" else f"{module}.{klass.__qualname__}"


def types_compatible(received: Any, expected: Any) -> bool:
    """ComfyUI's validate_node_input (non-strict): equal, ``*``, MatchType, or overlapping
    comma-separated unions."""
    if received == expected:
        return True
    if received == "*" or expected == "*":
        return True
    if received == "COMFY_MATCHTYPE_V3" or expected == "COMFY_MATCHTYPE_V3":
        return True
    if isinstance(received, list) and expected == COMBO:
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    r = {t.strip() for t in received.split(",")}
    e = {t.strip() for t in expected.split(",")}
    if "*" in r or "*" in e:
        return True
    return bool(r & e)


class CustomValidator:
    """A class's own ``VALIDATE_INPUTS``/``validate_inputs``: the inputs it takes (whose standard
    checks are then skipped) and the function (True, False or an error string)."""

    def __init__(self, qualname: str, args: tuple[str, ...], fn: ValidateFn) -> None:
        self.qualname = qualname
        self.args = args
        self.fn = fn


def _file_validator(folders: Folders, what: str) -> ValidateFn:
    def check(**kwargs: Any) -> Any:
        (name,) = kwargs.values()
        # ComfyUI: folder_paths.exists_annotated_filepath(name); a linked (None) value raises
        # AttributeError there as it does here.
        if not folders.annotated(name).exists():
            return f"Invalid {what} file: {name}"
        return True

    return check


def default_custom_validators(folders: Folders) -> dict[str, CustomValidator]:
    """The classes of ComfyUI 0.8.0 that validate some inputs themselves."""
    image = _file_validator(folders, "image")

    def always_true(**_: Any) -> bool:
        return True

    kling_args = ("horizontal_movement", "vertical_movement", "pan", "tilt", "roll", "zoom")
    return {
        "LoadImage": CustomValidator("LoadImage.VALIDATE_INPUTS", ("image",), image),
        "LoadImageMask": CustomValidator("LoadImageMask.VALIDATE_INPUTS", ("image",), image),
        "LoadImageOutput": CustomValidator("LoadImage.VALIDATE_INPUTS", ("image",), image),
        "LoadLatent": CustomValidator(
            "LoadLatent.VALIDATE_INPUTS", ("latent",), _file_validator(folders, "latent")
        ),
        "LoadVideo": CustomValidator(
            "LoadVideo.validate_inputs", ("file",), _file_validator(folders, "video")
        ),
        "LoadAudio": CustomValidator(
            "LoadAudio.validate_inputs", ("audio",), _file_validator(folders, "audio")
        ),
        "CustomCombo": CustomValidator("CustomCombo.validate_inputs", ("choice",), always_true),
        "KlingCameraControls": CustomValidator(
            "KlingCameraControls.validate_inputs", kling_args, always_true
        ),
        "FluxProUltraImageNode": CustomValidator(
            "FluxProUltraImageNode.validate_inputs", ("aspect_ratio",), always_true
        ),
    }


def _input_spec(info: dict[str, Any], name: str) -> tuple[Any, str | None, dict[str, Any]]:
    """(input type, category, extra info) of one input, like graph.get_input_info."""
    for category in ("required", "optional", "hidden"):
        section = info["input"].get(category) or {}
        if name in section:
            spec = section[name]
            if isinstance(spec, str):  # hidden inputs of legacy nodes: "PROMPT"
                return spec, category, {}
            extra = spec[1] if len(spec) > 1 else {}
            return spec[0], category, extra
    return None, None, {}


class _Cycle(RecursionError):
    pass


class Validator:
    def __init__(
        self,
        catalog: NodeCatalog,
        custom: dict[str, CustomValidator] | None = None,
    ) -> None:
        self.catalog = catalog
        self.custom = custom if custom is not None else default_custom_validators(catalog.folders)

    # -- one node ---------------------------------------------------------------------------

    def validate_inputs(
        self,
        prompt: dict[str, Any],
        unique_id: str,
        validated: dict[str, tuple[bool, list[dict[str, Any]], str]],
        _active: set[str] | None = None,
    ) -> tuple[bool, list[dict[str, Any]], str]:
        if unique_id in validated:
            return validated[unique_id]
        active = _active if _active is not None else set()
        if unique_id in active:
            raise _Cycle("maximum recursion depth exceeded")
        active.add(unique_id)
        try:
            return self._validate_inputs(prompt, unique_id, validated, active)
        finally:
            active.discard(unique_id)

    def _validate_inputs(self, prompt, unique_id, validated, active):
        inputs = prompt[unique_id]["inputs"]
        class_type = prompt[unique_id]["class_type"]
        info = self.catalog.info(class_type)
        assert info is not None
        custom = self.custom.get(class_type)
        custom_args: tuple[str, ...] = custom.args if custom else ()

        errors: list[dict[str, Any]] = []
        valid = True
        section_names = [
            *(info["input"].get("required") or {}),
            *(info["input"].get("optional") or {}),
        ]
        for x in section_names:
            input_type, category, extra = _input_spec(info, x)
            if input_type in DYNAMIC_V3_TYPES:
                continue  # expanded into "name.sub" inputs by ComfyUI; not modelled here
            if x not in inputs:
                if category == "required":
                    errors.append(
                        _input_error("required_input_missing", "Required input is missing", x)
                    )
                continue

            val = inputs[x]
            config = [input_type, extra]
            if isinstance(val, list):
                if len(val) != 2:
                    errors.append(
                        _input_error(
                            "bad_linked_input",
                            "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                            x,
                            input_config=config,
                            received_value=val,
                        )
                    )
                    continue
                o_id = val[0]
                o_class_type = prompt[o_id]["class_type"]  # KeyError for a missing node, as ComfyUI
                received_type = self.catalog.return_types(o_class_type)[val[1]]
                if not types_compatible(received_type, input_type):
                    errors.append(
                        _input_error(
                            "return_type_mismatch",
                            "Return type mismatch between linked nodes",
                            x,
                            f"{x}, received_type({received_type}) "
                            f"mismatch input_type({input_type})",
                            input_config=config,
                            received_type=received_type,
                            linked_node=val,
                        )
                    )
                    continue
                try:
                    r = self.validate_inputs(prompt, o_id, validated, active)
                    if r[0] is False:
                        valid = False
                        continue
                except Exception as ex:
                    _, _, tb = sys.exc_info()
                    valid = False
                    validated[o_id] = (
                        False,
                        [
                            _input_error(
                                "exception_during_inner_validation",
                                "Exception when validating inner node",
                                x,
                                str(ex),
                                input_config=config,
                                exception_message=str(ex),
                                exception_type=_full_type_name(type(ex)),
                                traceback=traceback.format_tb(tb),
                                linked_node=val,
                            )
                        ],
                        o_id,
                    )
                    continue
            else:
                try:
                    if isinstance(val, dict) and "__value__" in val:
                        val = val["__value__"]
                        inputs[x] = val
                    if input_type == "INT":
                        val = int(val)
                        inputs[x] = val
                    if input_type == "FLOAT":
                        val = float(val)
                        inputs[x] = val
                    if input_type == "STRING":
                        val = str(val)
                        inputs[x] = val
                    if input_type == "BOOLEAN":
                        val = bool(val)
                        inputs[x] = val
                except Exception as ex:
                    errors.append(
                        _input_error(
                            "invalid_input_type",
                            f"Failed to convert an input value to a {input_type} value",
                            x,
                            f"{x}, {val}, {ex}",
                            input_config=config,
                            received_value=val,
                            exception_message=str(ex),
                        )
                    )
                    continue

                if x in custom_args:
                    continue
                if "min" in extra and val < extra["min"]:
                    errors.append(
                        _input_error(
                            "value_smaller_than_min",
                            f"Value {val} smaller than min of {extra['min']}",
                            x,
                            input_config=config,
                            received_value=val,
                        )
                    )
                    continue
                if "max" in extra and val > extra["max"]:
                    errors.append(
                        _input_error(
                            "value_bigger_than_max",
                            f"Value {val} bigger than max of {extra['max']}",
                            x,
                            input_config=config,
                            received_value=val,
                        )
                    )
                    continue
                if isinstance(input_type, list) or input_type == COMBO:
                    options = extra.get("options", []) if input_type == COMBO else input_type
                    if val not in options:
                        input_config: Any = config
                        if len(options) > 20:
                            list_info = f"(list of length {len(options)})"
                            input_config = None
                        else:
                            list_info = str(options)
                        errors.append(
                            _input_error(
                                "value_not_in_list",
                                "Value not in list",
                                x,
                                f"{x}: '{val}' not in {list_info}",
                                input_config=input_config,
                                received_value=val,
                            )
                        )
                        continue

        if custom is not None:
            errors.extend(self._run_custom(custom, info, inputs))

        ret = (False, errors, unique_id) if errors or valid is not True else (True, [], unique_id)
        validated[unique_id] = ret
        return ret

    @staticmethod
    def _run_custom(custom: CustomValidator, info: dict[str, Any], inputs: dict[str, Any]):
        # ComfyUI passes the node's non-linked known inputs (links as None) that the function
        # takes, each as a one-element list, and calls it once per list index.
        filtered: dict[str, list[Any]] = {}
        for x, v in inputs.items():
            _, category, _ = _input_spec(info, x)
            if category is None or x not in custom.args:
                continue
            filtered[x] = [None] if isinstance(v, list) else [v]
        if not filtered:
            # ComfyUI calls the function without arguments; Python's TypeError follows.
            names = [f"'{a}'" for a in custom.args]
            listed = (
                names[0]
                if len(names) == 1
                else (
                    f"{names[0]} and {names[1]}"
                    if len(names) == 2
                    else ", ".join(names[:-1]) + f", and {names[-1]}"
                )
            )
            raise TypeError(
                f"{custom.qualname}() missing {len(names)} required positional "
                f"argument{'s' if len(names) > 1 else ''}: {listed}"
            )
        else:
            n = max(len(v) for v in filtered.values())
            results = [
                custom.fn(**{k: v[i if len(v) > i else -1] for k, v in filtered.items()})
                for i in range(n)
            ]
        errors = []
        for x in filtered:
            for r in results:
                if r is not True:
                    details = f"{x}" + (f" - {r}" if r is not False else "")
                    errors.append(
                        _input_error(
                            "custom_validation_failed",
                            "Custom validation failed for node",
                            x,
                            details,
                        )
                    )
        return errors

    # -- the whole prompt -------------------------------------------------------------------

    def validate_prompt(
        self, prompt: dict[str, Any], partial_execution_list: list[str] | None
    ) -> tuple[bool, dict[str, Any] | None, list[str], dict[str, Any]]:
        """(valid, top-level error, outputs to execute, node_errors) like ComfyUI."""
        outputs: list[str] = []
        for x in prompt:
            if "class_type" not in prompt[x]:
                return (
                    False,
                    {
                        "type": "invalid_prompt",
                        "message": "Cannot execute because a node is missing the class_type "
                        "property.",
                        "details": f"Node ID '#{x}'",
                        "extra_info": {},
                    },
                    [],
                    {},
                )
            class_type = prompt[x]["class_type"]
            if class_type not in self.catalog:
                return (
                    False,
                    {
                        "type": "invalid_prompt",
                        "message": f"Cannot execute because node {class_type} does not exist.",
                        "details": f"Node ID '#{x}'",
                        "extra_info": {},
                    },
                    [],
                    {},
                )
            if (
                self.catalog.is_output_node(class_type)
                and (partial_execution_list is None or x in partial_execution_list)
                and x not in outputs
            ):
                outputs.append(x)

        if not outputs:
            return (
                False,
                {
                    "type": "prompt_no_outputs",
                    "message": "Prompt has no outputs",
                    "details": "",
                    "extra_info": {},
                },
                [],
                {},
            )

        good_outputs: list[str] = []
        failed: list[tuple[str, list[dict[str, Any]]]] = []
        node_errors: dict[str, Any] = {}
        validated: dict[str, tuple[bool, list[dict[str, Any]], str]] = {}
        for o in outputs:
            try:
                valid, reasons, _ = self.validate_inputs(prompt, o, validated)
            except Exception as ex:
                _, _, tb = sys.exc_info()
                valid = False
                reasons = [
                    {
                        "type": "exception_during_validation",
                        "message": "Exception when validating node",
                        "details": str(ex),
                        "extra_info": {
                            "exception_type": _full_type_name(type(ex)),
                            "traceback": traceback.format_tb(tb),
                        },
                    }
                ]
                validated[o] = (False, reasons, o)

            if valid is True:
                good_outputs.append(o)
                continue
            failed.append((o, reasons))
            for node_id, (node_valid, node_reasons, _) in validated.items():
                if node_valid is not True and node_reasons:
                    if node_id not in node_errors:
                        node_errors[node_id] = {
                            "errors": node_reasons,
                            "dependent_outputs": [],
                            "class_type": prompt[node_id]["class_type"],
                        }
                    node_errors[node_id]["dependent_outputs"].append(o)

        if not good_outputs:
            details = "\n".join(
                f"{e['message']}: {e['details']}" for _, errors in failed for e in errors
            )
            return (
                False,
                {
                    "type": "prompt_outputs_failed_validation",
                    "message": "Prompt outputs failed validation",
                    "details": details,
                    "extra_info": {},
                },
                [],
                node_errors,
            )
        return True, None, good_outputs, node_errors
