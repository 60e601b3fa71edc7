# The Sentinel table schemas, from infra/schema/tables.json (written by `telemetry-hunt schema`).
# This file stands alone on purpose: infra/validate.sh evaluates it with real Terraform and
# compares the result with the schema.
locals {
  schema = jsondecode(file("${path.module}/../schema/tables.json"))

  # Custom table name => its Log Analytics columns (TimeGenerated first).
  table_columns = { for table in local.schema.tables : table.name => table.columns }

  # One DCR stream per table: its columns (EventTime first) and the transform into the table.
  streams = [
    for table in local.schema.tables : {
      name          = table.stream
      columns       = local.schema.streamDeclarations[table.stream].columns
      transform_kql = table.transformKql
    }
  ]
}
