"""Offline azurerm check: every `azurerm_*` resource and data source in the .tf files against
the provider schema, i.e. what `terraform validate` reports for unknown resource types,
unsupported arguments or blocks, and missing required ones (recursing into nested blocks,
`dynamic` blocks checked through their `content`). The azurerm provider cannot be downloaded
here; its schema comes from the jsii assembly in the PyPI wheel cdktn-provider-azurerm, which is
generated from the provider. Values, enums and cross-field rules are not checked.

Usage: python tf_schema_check.py PROVIDER.jsii TERRAFORM_DIR
"""
import glob
import json
import os
import re
import sys

import hcl2

META = {"count", "for_each", "provider", "depends_on", "lifecycle", "connection", "provisioner"}
HCL2_MARKERS = {"__is_block__", "__start_line__", "__end_line__", "__comments__"}


def tf_name(prop):
    summary = (prop.get("docs") or {}).get("summary", "")
    anchor = re.search(r"#([a-z0-9_]+) ", summary)
    if anchor:
        return anchor.group(1)
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), prop["name"])


class Schema:
    def __init__(self, jsii_path):
        assembly = json.load(open(jsii_path))
        self.version = f"{assembly['name']} {assembly['version']}"
        self.types = assembly["types"]
        self.configs = {"resource": {}, "data": {}}
        for fqn, t in self.types.items():
            if t["kind"] != "class" or "docs" not in t or fqn + "Config" not in self.types:
                continue
            link = re.search(r"/docs/(resources|data-sources)/([a-z0-9_]+)", t["docs"].get("summary", ""))
            if link:
                kind = "resource" if link.group(1) == "resources" else "data"
                self.configs[kind]["azurerm_" + link.group(2)] = fqn + "Config"

    def struct(self, typeref):
        if "fqn" in typeref:
            return typeref["fqn"] if typeref["fqn"] in self.types else None
        if "collection" in typeref:
            return self.struct(typeref["collection"]["elementtype"])
        for member in typeref.get("union", {}).get("types", []):
            found = self.struct(member)
            if found:
                return found
        return None

    def props(self, fqn):
        return {tf_name(p): p for p in self.types[fqn].get("properties", [])}


def blocks(body):
    """(name, [block bodies]) of a body's blocks, with `dynamic` blocks as their content."""
    for key, value in body.items():
        if key == "dynamic":
            for dynamic in value:
                for name, spec in dynamic.items():
                    yield name.strip('"'), [spec.get("content", [{}])[0]], True
        elif isinstance(value, list) and value and isinstance(value[0], dict) and value[0].get("__is_block__"):
            yield key, value, False


def check_body(schema, body, fqn, where, errors):
    props = schema.props(fqn)
    present = set()
    block_names = set()
    for name, bodies, _ in blocks(body):
        block_names.add(name)
        present.add(name)
        if name not in props:
            errors.append(f"{where}: unsupported block '{name}'")
            continue
        sub = schema.struct(props[name]["type"])
        if sub and schema.types[sub]["kind"] == "interface":
            for i, b in enumerate(bodies):
                check_body(schema, b, sub, f"{where}.{name}[{i}]", errors)
    for key in body:
        if key in META or key in HCL2_MARKERS or key == "dynamic" or key in block_names:
            continue
        present.add(key)
        if key not in props:
            errors.append(f"{where}: unsupported argument '{key}'")
    for name, p in props.items():
        if not p.get("optional") and name not in present:
            errors.append(f"{where}: missing required argument or block '{name}'")


def main():
    schema = Schema(sys.argv[1])
    errors = []
    checked = 0
    for path in sorted(glob.glob(os.path.join(sys.argv[2], "**/*.tf"), recursive=True)):
        with open(path) as f:
            parsed = hcl2.load(f)
        for kind in ("resource", "data"):
            for declaration in parsed.get(kind, []):
                for rtype, instances in declaration.items():
                    rtype = rtype.strip('"')
                    for rname, body in instances.items():
                        where = f"{path}: {kind} {rtype}.{rname.strip(chr(34))}"
                        if rtype not in schema.configs[kind]:
                            if rtype.startswith("azurerm_"):
                                errors.append(f"{where}: unknown {kind} type for {schema.version}")
                            continue
                        check_body(schema, body, schema.configs[kind][rtype], where, errors)
                        checked += 1
    print(f"{schema.version}: {checked} resources and data sources checked")
    for e in errors:
        print("ERROR", e)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
