//! The result tables as Microsoft Sentinel sees them: Log Analytics custom tables (`<Table>_CL`)
//! fed through data collection rule (DCR) streams (`Custom-<Table>_CL`).
//!
//! Derived from [`TABLES`] alone, so the Logs Ingestion sink, the infra (`telemetry-hunt schema`
//! writes `infra/schema/tables.json`, which Bicep and Terraform load) and the code cannot
//! disagree about a column.
//!
//! A row sent to a stream carries every table column plus [`EVENT_TIME`], the time the run
//! produced it; the DCR transform turns that into `TimeGenerated`. So the newest re-send of a
//! row has the largest `TimeGenerated`, which is what `arg_max(TimeGenerated, *) by <key>` in the
//! workbook and the analytics rule relies on.

use serde_json::{json, Value};

use super::tables::{TableDef, TABLES};
use super::ColumnType;

/// The column the DCR transform turns into `TimeGenerated`.
pub const EVENT_TIME: &str = "EventTime";
/// Every row sent says which run produced it, so re-sent rows can be told apart; tables that
/// have no such column of their own get it in Sentinel.
pub const RUN_ID: &str = "RunId";
/// Every Log Analytics table has it; the transform sets it from [`EVENT_TIME`].
pub const TIME_GENERATED: &str = "TimeGenerated";
pub const TRANSFORM_KQL: &str = "source | extend TimeGenerated = todatetime(EventTime) | project-away EventTime";

/// Names the Logs Ingestion API refuses as columns (compared case-insensitively), as its
/// documentation lists them ("tenanted" included), plus the two this module adds itself.
const RESERVED: [&str; 10] = [
    "type",
    "tenantid",
    "tenanted",
    "resource",
    "resourceid",
    "resourcename",
    "resourcetype",
    "subscriptionid",
    "timegenerated",
    "eventtime",
];
const MAX_COLUMN_NAME: usize = 45;

pub fn table_name(table: &TableDef) -> String {
    format!("{}_CL", table.name)
}

pub fn stream_name(table: &TableDef) -> String {
    format!("Custom-{}_CL", table.name)
}

/// The type of a column in a DCR stream declaration.
pub fn stream_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Text => "string",
        ColumnType::Int => "long",
        ColumnType::Float => "real",
        ColumnType::Bool => "boolean",
        ColumnType::Day | ColumnType::Time => "datetime",
        ColumnType::Json => "dynamic",
    }
}

/// The type of a column in the Log Analytics tables API, which spells `dateTime` where the DCR
/// spells `datetime` (both APIs compare case-sensitively).
pub fn table_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Day | ColumnType::Time => "dateTime",
        other => stream_type(other),
    }
}

/// Checks a column name against the Logs Ingestion rules: a letter first, then at most 44
/// letters, digits, `_` or `-`, and not a reserved name.
pub fn check_column_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphabetic()) {
        return Err(format!("column `{name}` must start with a letter"));
    }
    if name.len() > MAX_COLUMN_NAME {
        return Err(format!("column `{name}` is longer than {MAX_COLUMN_NAME} characters"));
    }
    if let Some(bad) = chars.find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
        return Err(format!("column `{name}` holds `{bad}`; only letters, digits, `_` and `-` are allowed"));
    }
    if RESERVED.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(format!("column `{name}` is a reserved name in Log Analytics"));
    }
    Ok(())
}

/// The columns a row sent to the table's stream carries: `EventTime`, the table's columns, and
/// `RunId` when the table has none.
pub fn stream_columns(table: &TableDef) -> Vec<(&'static str, &'static str)> {
    sentinel_columns(table, (EVENT_TIME, "datetime"), stream_type)
}

/// The columns of the Log Analytics table: `TimeGenerated`, the table's columns, and `RunId`
/// when the table has none.
pub fn table_columns(table: &TableDef) -> Vec<(&'static str, &'static str)> {
    sentinel_columns(table, (TIME_GENERATED, "dateTime"), table_type)
}

fn sentinel_columns(
    table: &TableDef,
    time: (&'static str, &'static str),
    type_of: fn(ColumnType) -> &'static str,
) -> Vec<(&'static str, &'static str)> {
    let mut out = vec![time];
    out.extend(table.columns.iter().map(|(name, ty)| (*name, type_of(*ty))));
    if !table.columns.iter().any(|(name, _)| *name == RUN_ID) {
        out.push((RUN_ID, type_of(ColumnType::Text)));
    }
    out
}

fn columns(list: Vec<(&'static str, &'static str)>) -> Value {
    Value::Array(list.into_iter().map(|(name, ty)| json!({ "name": name, "type": ty })).collect())
}

/// The schema document the infra loads: `streamDeclarations` in the DCR's own shape, and one
/// entry per table with its stream, its transform and its Log Analytics columns.
pub fn document(tables: &[TableDef]) -> Result<Value, String> {
    let mut streams = serde_json::Map::new();
    let mut definitions = Vec::new();
    for table in tables {
        for (name, _) in table.columns {
            check_column_name(name).map_err(|e| format!("table {}: {e}", table.name))?;
        }
        streams.insert(stream_name(table), json!({ "columns": columns(stream_columns(table)) }));
        definitions.push(json!({
            "name": table_name(table),
            "stream": stream_name(table),
            "transformKql": TRANSFORM_KQL,
            "columns": columns(table_columns(table)),
        }));
    }
    Ok(json!({
        "$comment": "Generated by `telemetry-hunt schema` from src/sink/tables.rs; do not edit.",
        "streamDeclarations": streams,
        "tables": definitions,
    }))
}

/// [`document`] of every result table, as the `schema` command prints it.
pub fn render() -> Result<String, String> {
    let text = serde_json::to_string_pretty(&document(TABLES)?).map_err(|e| e.to_string())?;
    Ok(text + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_becomes_a_stream_and_a_table_with_its_columns_in_order() {
        let doc = document(TABLES).unwrap();
        let tables = doc["tables"].as_array().unwrap();
        assert_eq!(tables.len(), TABLES.len());
        for (def, table) in TABLES.iter().zip(tables) {
            let stream = format!("Custom-{}_CL", def.name);
            assert_eq!(table["name"], format!("{}_CL", def.name));
            assert_eq!(table["stream"], stream);
            assert_eq!(table["transformKql"], TRANSFORM_KQL);
            let names = |v: &Value| -> Vec<String> {
                v.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_string()).collect()
            };
            let mut own: Vec<String> = def.columns.iter().map(|(n, _)| n.to_string()).collect();
            if !own.iter().any(|n| n == "RunId") {
                own.push("RunId".into());
            }
            assert_eq!(names(&table["columns"]), [vec!["TimeGenerated".to_string()], own.clone()].concat());
            assert_eq!(
                names(&doc["streamDeclarations"][&stream]["columns"]),
                [vec!["EventTime".to_string()], own].concat()
            );
        }
    }

    #[test]
    fn types_are_spelled_as_each_api_wants() {
        let doc = document(TABLES).unwrap();
        let daily_stream = &doc["streamDeclarations"]["Custom-MdeTelemetryDaily_CL"]["columns"];
        assert_eq!(daily_stream[0], json!({"name": "EventTime", "type": "datetime"}));
        assert_eq!(daily_stream[1], json!({"name": "Day", "type": "datetime"}));
        assert_eq!(daily_stream[3], json!({"name": "Connections", "type": "long"}));
        let daily_table = &doc["tables"][0]["columns"];
        assert_eq!(daily_table[0], json!({"name": "TimeGenerated", "type": "dateTime"}));
        assert_eq!(daily_table[1], json!({"name": "Day", "type": "dateTime"}));
        let expected = [
            (ColumnType::Text, "string", "string"),
            (ColumnType::Int, "long", "long"),
            (ColumnType::Float, "real", "real"),
            (ColumnType::Bool, "boolean", "boolean"),
            (ColumnType::Day, "datetime", "dateTime"),
            (ColumnType::Time, "datetime", "dateTime"),
            (ColumnType::Json, "dynamic", "dynamic"),
        ];
        for (ty, stream, table) in expected {
            assert_eq!((stream_type(ty), table_type(ty)), (stream, table), "{ty:?}");
        }
    }

    #[test]
    fn column_names_follow_the_logs_ingestion_rules() {
        for ok in ["Day", "Rows-Matched_2", &"a".repeat(45)] {
            assert_eq!(check_column_name(ok), Ok(()), "{ok}");
        }
        for bad in ["_ItemId", "2xx", "", "Has space", "Dötter", &"a".repeat(46)] {
            assert!(check_column_name(bad).is_err(), "{bad}");
        }
        for reserved in ["Type", "TENANTID", "resourceId", "SubscriptionId", "TimeGenerated", "EventTime"] {
            assert!(check_column_name(reserved).unwrap_err().contains("reserved"), "{reserved}");
        }
        const BAD: &[(&str, ColumnType)] = &[("Day", ColumnType::Day), ("Type", ColumnType::Text)];
        let err = document(&[TableDef { name: "T", columns: BAD, key: &["Day"] }]).unwrap_err();
        assert!(err.contains("table T") && err.contains("`Type`"), "{err}");
    }
}
