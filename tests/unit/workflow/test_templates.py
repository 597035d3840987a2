"""Templates: ``{{ NAME }}`` placeholders typed by position, names that cannot escape the folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from wf_helpers import DATA

from comfyfleet.errors import TemplateNotFound, TemplateParameterMissing, WorkflowFormatError
from comfyfleet.workflow import list_templates, load_template, placeholders, render_template

TEMPLATES = DATA / "templates"


def test_whole_string_placeholder_takes_the_parameters_type() -> None:
    text = '{"a": "{{ W }}", "b": "{{W}}", "c": "{{  CFG  }}", "d": "{{ OBJ }}", "e": "{{ T }}"}'
    params = {"W": 512, "CFG": 7.5, "OBJ": {"k": [1, "x"]}, "T": "text"}
    assert render_template(text, params) == {
        "a": 512,
        "b": 512,
        "c": 7.5,
        "d": {"k": [1, "x"]},
        "e": "text",
    }


def test_placeholder_inside_a_string_is_text_with_json_escaping() -> None:
    prompt = 'a "quoted" word, a back\\slash\nand a new line'
    text = '{"text": "masterpiece, {{ PROMPT }} -- {{ N }} steps"}'
    rendered = render_template(text, {"PROMPT": prompt, "N": 20})
    assert rendered == {"text": f"masterpiece, {prompt} -- 20 steps"}


def test_bare_placeholder_outside_strings_is_a_json_literal() -> None:
    text = '{"seed": {{ SEED }}, "cfg": {{ CFG | 8.0 }}, "s": "{x} {{ X }}"}'
    assert render_template(text, {"SEED": 7, "X": "y"}) == {"seed": 7, "cfg": 8.0, "s": "{x} y"}


def test_defaults_are_json_when_they_parse_and_text_otherwise() -> None:
    text = '{"a": "{{ A | 512 }}", "b": "{{ B | true }}", "c": "{{ C | blurry, ugly }}"}'
    assert render_template(text, {}) == {"a": 512, "b": True, "c": "blurry, ugly"}
    assert render_template(text, {"A": 64})["a"] == 64


def test_the_same_value_twice_is_not_shared() -> None:
    rendered = render_template('{"a": "{{ O }}", "b": "{{ O }}"}', {"O": {"x": 1}})
    rendered["a"]["x"] = 2
    assert rendered["b"] == {"x": 1}


def test_missing_parameters_are_all_named() -> None:
    text = '{"a": "{{ PROMPT }}", "b": {{ SEED }}, "c": "x {{ STYLE }}", "d": "{{ W | 1 }}"}'
    with pytest.raises(TemplateParameterMissing) as info:
        render_template(text, {}, name="t2i")
    assert info.value.message == "template 't2i' needs a value for PROMPT, SEED, STYLE"
    assert info.value.details == {"template": "t2i", "missing": ["PROMPT", "SEED", "STYLE"]}


def test_result_that_is_not_json() -> None:
    with pytest.raises(WorkflowFormatError, match="template 'bad' is not valid JSON after"):
        render_template('{"a": {{ X }} }}', {"X": 1}, name="bad")


def test_placeholders_lists_every_name() -> None:
    text = (TEMPLATES / "txt2img.json").read_text()
    assert placeholders(text) == {
        "SEED",
        "STEPS",
        "CKPT",
        "WIDTH",
        "HEIGHT",
        "PROMPT",
        "NEGATIVE_PROMPT",
        "JOB_ID",
    }


def test_list_and_load_templates() -> None:
    assert list_templates(TEMPLATES) == ["txt2img", "wan_i2v"]
    assert list_templates(None) == []
    text = load_template(TEMPLATES, "wan_i2v")
    assert json.loads(text)["52"]["inputs"]["image"] == "{{ INPUT_IMAGE }}"
    assert load_template(TEMPLATES, "wan_i2v.json") == text


def test_unknown_template_lists_the_available_ones() -> None:
    with pytest.raises(TemplateNotFound) as info:
        load_template(TEMPLATES, "flux")
    assert info.value.message == "no template named 'flux' (available: txt2img, wan_i2v)"
    assert info.value.details["available"] == ["txt2img", "wan_i2v"]
    assert info.value.status == 404


def test_no_templates_directory() -> None:
    with pytest.raises(TemplateNotFound, match="no templates directory is configured"):
        load_template(None, "txt2img")


@pytest.mark.parametrize(
    "name",
    ["../secret", "..", "a/../../b", "/etc/passwd", "sub/t", "..\\x", ".hidden", "a..b", ""],
)
def test_template_names_cannot_leave_the_directory(tmp_path: Path, name: str) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "ok.json").write_text("{}")
    (tmp_path / "secret.json").write_text('{"leaked": true}')
    with pytest.raises(TemplateNotFound) as info:
        load_template(templates, name)
    assert info.value.message == (
        f"invalid template name {name!r}: use letters, digits, '.', '_' and '-' only "
        "(available: ok)"
    )


def test_symlinks_placed_by_the_operator_are_followed(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (tmp_path / "shared.json").write_text('{"1": {}}')
    (templates / "linked.json").symlink_to(tmp_path / "shared.json")
    assert load_template(templates, "linked") == '{"1": {}}'
