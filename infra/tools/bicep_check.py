"""Offline Bicep check: parse (pycep) and type-check resource bodies against Bicep's own type
data (bicep-types-az `types.json`): unknown properties, missing required ones, read-only ones,
enum literals and unknown type@apiVersion pairs, i.e. what `bicep build` reports as BCP035,
BCP036, BCP037 and BCP081. No Bicep CLI can be installed here, so this stands in for it.

Unlike a plain parse, values that come from `loadJsonContent`/`loadTextContent`, variables,
property access, string interpolation and `for` loops over such values are evaluated, so the
table schemas loaded from infra/schema/tables.json are type-checked too. What depends on
parameters or other resources stays unknown and is skipped.

Usage: python bicep_check.py TYPES_DIR FILE.bicep...
"""
import glob
import json
import os
import re
import sys
from pathlib import Path

from pycep import BicepParser

REQUIRED, READONLY = 1, 2


class Unknown:
    """A value only Resource Manager knows at deploy time."""

    def __repr__(self):
        return "<unknown>"


UNKNOWN = Unknown()


def load_types(types_dir):
    index = {}
    namespaces = set()
    for path in glob.glob(os.path.join(types_dir, "*.json")):
        types = json.load(open(path))
        for t in types:
            if t.get("$type") == "ResourceType":
                index[t["name"].lower()] = (types, t["body"])
                namespaces.add(t["name"].split("/")[0].lower())
    return index, namespaces


class Evaluator:
    def __init__(self, bicep_file, parsed):
        self.dir = Path(bicep_file).parent
        self.variables = {}
        for name, var in parsed.get("variables", {}).items():
            self.variables[name] = self.eval(var["value"], {})

    def eval(self, value, scope):
        if isinstance(value, list):
            return [self.eval(v, scope) for v in value]
        if isinstance(value, str):
            return self.eval_string(value, scope)
        if not isinstance(value, dict):
            return value
        if "function" in value:
            return self.eval_function(value["function"], scope)
        if "operator" in value:
            op = value["operator"]
            if op["type"] == "property_accessor":
                base = self.eval(op["operands"]["operand_1"], scope)
                key = op["operands"]["operand_2"]
                return base.get(key, UNKNOWN) if isinstance(base, dict) else UNKNOWN
            return UNKNOWN
        if "loop_type" in value:
            return self.eval_loop(value, scope)
        return {k: self.eval(v, scope) for k, v in value.items()}

    def eval_loop(self, loop, scope):
        """`[for item in array: body]`, one body per item; unknown when the array or a filter is."""
        detail = loop["loop_type"]["detail"]
        items = self.eval(detail["array_name"], scope)
        if not isinstance(items, list) or loop.get("condition") is not None or "item_name" not in detail:
            return UNKNOWN
        return [self.eval(loop["config"], {**scope, detail["item_name"]: item}) for item in items]

    def eval_function(self, function, scope):
        kind, args = function["type"], function.get("parameters", {})
        if kind in ("load_json_content", "load_text_content"):
            path = self.dir / args["file_path"]
            if not path.is_file():
                raise SystemExit(f"ERROR {path}: loaded by the Bicep but missing")
            text = path.read_text()
            return json.loads(text) if kind == "load_json_content" else text
        return UNKNOWN

    def eval_string(self, text, scope):
        # pycep writes identifiers and string literals alike; only loop items and variables are
        # resolved, which is what the project's Bicep names without quotes.
        names = {**self.variables, **scope}
        if text in names:
            return names[text]
        if "${" not in text:
            return text
        parts = []
        for piece in re.split(r"(\$\{[^}]*\})", text):
            if piece.startswith("${"):
                path = piece[2:-1].split(".")
                value = names.get(path[0], UNKNOWN)
                for key in path[1:]:
                    value = value.get(key, UNKNOWN) if isinstance(value, dict) else UNKNOWN
                if not isinstance(value, (str, int)):
                    return UNKNOWN
                parts.append(str(value))
            else:
                parts.append(piece)
        return "".join(parts)

    def instances(self, resource):
        """The bodies a resource declaration deploys: one, or one per loop item."""
        config = resource["config"]
        if "loop_type" in config:
            bodies = self.eval_loop(config, {})
            if bodies is UNKNOWN:
                raise SystemExit(f"bicep_check.py cannot evaluate the loop of resource {resource['type']}")
            return bodies
        if "condition" in config and "config" in config:
            return [self.eval(config["config"], {})]
        return [self.eval(config, {})]


class TypeChecker:
    def __init__(self, index, namespaces):
        self.index, self.namespaces = index, namespaces
        self.errors = []

    def deref(self, types, ref):
        return types[int(ref["$ref"].split("/")[-1])]

    def check(self, types, ref, value, path, top=False):
        t = self.deref(types, ref)
        kind = t["$type"]
        if value is UNKNOWN:
            return
        if kind in ("ObjectType", "DiscriminatedObjectType"):
            if not isinstance(value, dict):
                return
            props = dict(t.get("properties", {}) if kind == "ObjectType" else t.get("baseProperties", {}))
            if kind == "DiscriminatedObjectType":
                tag = value.get(t["discriminator"])
                if isinstance(tag, str) and tag in t["elements"]:
                    props.update(self.deref(types, t["elements"][tag]).get("properties", {}))
                elif isinstance(tag, str):
                    self.errors.append(f"{path}.{t['discriminator']}: '{tag}' not one of {sorted(t['elements'])}")
            for key, v in value.items():
                if top and key in ("parent", "scope", "dependsOn"):
                    continue
                if key in props:
                    flags = props[key].get("flags", 0)
                    if flags & READONLY and not flags & REQUIRED:
                        self.errors.append(f"{path}.{key}: property is read-only")
                    self.check(types, props[key]["type"], v, f"{path}.{key}")
                elif "additionalProperties" in t:
                    self.check(types, t["additionalProperties"], v, f"{path}.{key}")
                else:
                    allowed = sorted(k for k, p in props.items() if not p.get("flags", 0) & READONLY)
                    self.errors.append(f"{path}: unknown property '{key}' (allowed: {', '.join(allowed)})")
            for key, p in props.items():
                if p.get("flags", 0) & REQUIRED and key not in value and key != "name":
                    self.errors.append(f"{path}: missing required property '{key}'")
        elif kind == "ArrayType":
            if isinstance(value, list):
                for i, item in enumerate(value):
                    self.check(types, t["itemType"], item, f"{path}[{i}]")
        elif kind == "UnionType":
            literals = [self.deref(types, e) for e in t["elements"]]
            allowed = [lit["value"] for lit in literals if lit["$type"] == "StringLiteralType"]
            # A union that also admits any string (e.g. DCR stream names) takes custom values, but
            # a known value spelled in another case is a mistake the Terraform provider rejects.
            open_ended = any(lit["$type"] == "StringType" for lit in literals)
            if isinstance(value, str) and allowed and value not in allowed:
                near = [a for a in allowed if a.lower() == value.lower()]
                if near:
                    self.errors.append(f"{path}: '{value}' is spelled '{near[0]}'")
                elif not open_ended:
                    self.errors.append(f"{path}: '{value}' not one of {allowed}")
        elif kind == "StringLiteralType":
            if isinstance(value, str) and value != t["value"]:
                self.errors.append(f"{path}: expected '{t['value']}', got '{value}'")

    def check_file(self, bicep_file):
        try:
            parsed = BicepParser().parse(text=Path(bicep_file).read_text())
        except Exception as error:  # lark reports syntax errors as several exception types
            self.errors.append(f"{bicep_file}: cannot parse: {str(error).splitlines()[0]}")
            return 0
        evaluator = Evaluator(bicep_file, parsed)
        checked = 0
        for name, resource in parsed.get("resources", {}).items():
            key = f"{resource['type']}@{resource['api_version']}".lower()
            where = f"{bicep_file}: resource {name} '{resource['type']}@{resource['api_version']}'"
            if key not in self.index:
                if resource["type"].split("/")[0].lower() in self.namespaces:
                    self.errors.append(f"{where}: no type information for this type/apiVersion")
                else:
                    self.errors.append(f"{where}: no type data for this namespace in the types folder")
                continue
            if resource.get("existing"):
                continue
            types, body = self.index[key]
            for i, instance in enumerate(evaluator.instances(resource)):
                self.check(types, body, instance, where if i == 0 else f"{where}[{i}]", top=True)
                checked += 1
        return checked


def main():
    checker = TypeChecker(*load_types(sys.argv[1]))
    for bicep_file in sys.argv[2:]:
        checked = checker.check_file(bicep_file)
        print(f"{bicep_file}: {checked} resource bodies type-checked against {len(checker.index)} types")
    for e in checker.errors:
        print("ERROR", e)
    sys.exit(1 if checker.errors else 0)


if __name__ == "__main__":
    main()
