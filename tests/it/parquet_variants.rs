//! The same rows written the ways real Parquet writers write them give the same tables:
//! INT96 timestamps, dictionary strings, large strings, string views, other time units and
//! zones, `TimeGenerated` instead of `Timestamp`, many row groups, missing optional columns,
//! empty files. Row groups outside `--from/--to` are skipped by their statistics.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{ArrayRef, Int32Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int96, Int96Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use telemetry_hunt::hunt::host::MatchMode;

use crate::support::{daily, generated_sample, run, run_window, table_files};

const TEXT_COLUMNS: [&str; 9] = [
    "DeviceId",
    "DeviceName",
    "ActionType",
    "RemoteUrl",
    "InitiatingProcessFileName",
    "InitiatingProcessFolderPath",
    "InitiatingProcessVersionInfoCompanyName",
    "InitiatingProcessCommandLine",
    "MachineGroup",
];

/// The rows of the generated sample, as plain columns.
struct Rows {
    time: Vec<i64>,
    text: Vec<Vec<Option<String>>>,
    port: Vec<Option<i32>>,
}

fn load(dir: &Path) -> Rows {
    let mut rows = Rows { time: Vec::new(), text: vec![Vec::new(); TEXT_COLUMNS.len()], port: Vec::new() };
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "parquet"));
    files.sort();
    for path in files {
        for batch in ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap().build().unwrap() {
            let batch = batch.unwrap();
            let ts = batch.column_by_name("Timestamp").unwrap().as_primitive::<TimestampMicrosecondType>();
            rows.time.extend(ts.values().iter().copied());
            for (i, name) in TEXT_COLUMNS.iter().enumerate() {
                let col = arrow_cast::cast(batch.column_by_name(name).unwrap(), &DataType::Utf8).unwrap();
                rows.text[i].extend(col.as_string::<i32>().iter().map(|v| v.map(str::to_string)));
            }
            let port = arrow_cast::cast(batch.column_by_name("RemotePort").unwrap(), &DataType::Int32).unwrap();
            rows.port.extend(port.as_primitive::<arrow_array::types::Int32Type>().iter());
        }
    }
    rows
}

/// Writes the rows with Arrow types chosen by the caller.
fn write_arrow(
    rows: &Rows,
    path: &Path,
    time_name: &str,
    time_type: DataType,
    text_type: DataType,
    port_type: DataType,
    row_group: usize,
    dictionary_page_bytes: Option<usize>,
) {
    let micros = TimestampMicrosecondArray::from(rows.time.clone());
    // Cast without the zone (arrow parses zone names only with chrono-tz), then label it.
    let DataType::Timestamp(unit, zone) = &time_type else { panic!("a timestamp type") };
    let naive = arrow_cast::cast(&micros, &DataType::Timestamp(*unit, None)).unwrap();
    let time: ArrayRef = arrow_array::make_array(
        naive.to_data().into_builder().data_type(DataType::Timestamp(*unit, zone.clone())).build().unwrap(),
    );
    let mut fields = vec![Field::new(time_name, time_type, false)];
    let mut columns = vec![time];
    for (i, name) in TEXT_COLUMNS.iter().enumerate() {
        let plain: ArrayRef = Arc::new(StringArray::from(rows.text[i].clone()));
        columns.push(arrow_cast::cast(&plain, &text_type).unwrap());
        fields.push(Field::new(*name, text_type.clone(), true));
    }
    let port: ArrayRef = Arc::new(Int32Array::from(rows.port.clone()));
    columns.push(arrow_cast::cast(&port, &port_type).unwrap());
    fields.push(Field::new("RemotePort", port_type, true));
    // a column the job never reads
    columns.push(Arc::new(StringArray::from(vec![Some("10.0.0.1"); rows.time.len()])));
    fields.push(Field::new("LocalIP", DataType::Utf8, true));
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    // `Some(0)`: no dictionary at all; `Some(n)`: dictionaries that fall back to plain pages
    // once they hold n bytes, as pyarrow's and Spark's do on high-cardinality columns.
    let mut props = WriterProperties::builder().set_max_row_group_row_count(Some(row_group));
    props = match dictionary_page_bytes {
        Some(0) => props.set_dictionary_enabled(false),
        Some(limit) => props.set_dictionary_page_size_limit(limit),
        None => props,
    };
    let props = props.build();
    let mut writer = ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// Writes the rows with INT96 timestamps, as Spark, Hive and older Impala/ADF writers do.
fn write_int96(rows: &Rows, path: &Path) {
    let mut message = String::from("message schema { REQUIRED INT96 Timestamp; ");
    for name in TEXT_COLUMNS {
        message.push_str(&format!("OPTIONAL BYTE_ARRAY {name} (UTF8); "));
    }
    message.push_str("OPTIONAL INT32 RemotePort; }");
    let schema = Arc::new(parquet::schema::parser::parse_message_type(&message).unwrap());
    let mut writer = SerializedFileWriter::new(File::create(path).unwrap(), schema, Default::default()).unwrap();
    for chunk in (0..rows.time.len()).collect::<Vec<_>>().chunks(40_000) {
        let mut group = writer.next_row_group().unwrap();
        let mut column = group.next_column().unwrap().unwrap();
        let values: Vec<Int96> = chunk
            .iter()
            .map(|&r| {
                let t = rows.time[r];
                let days = t.div_euclid(86_400_000_000);
                let nanos = (t - days * 86_400_000_000) as u64 * 1_000;
                let mut v = Int96::new();
                v.set_data(nanos as u32, (nanos >> 32) as u32, (days + 2_440_588) as u32);
                v
            })
            .collect();
        column.typed::<Int96Type>().write_batch(&values, None, None).unwrap();
        column.close().unwrap();
        for i in 0..TEXT_COLUMNS.len() {
            let mut column = group.next_column().unwrap().unwrap();
            let defs: Vec<i16> = chunk.iter().map(|&r| i16::from(rows.text[i][r].is_some())).collect();
            let values: Vec<ByteArray> =
                chunk.iter().filter_map(|&r| rows.text[i][r].as_deref().map(ByteArray::from)).collect();
            column.typed::<ByteArrayType>().write_batch(&values, Some(&defs), None).unwrap();
            column.close().unwrap();
        }
        let mut column = group.next_column().unwrap().unwrap();
        let defs: Vec<i16> = chunk.iter().map(|&r| i16::from(rows.port[r].is_some())).collect();
        let values: Vec<i32> = chunk.iter().filter_map(|&r| rows.port[r]).collect();
        column.typed::<Int32Type>().write_batch(&values, Some(&defs), None).unwrap();
        column.close().unwrap();
        group.close().unwrap();
    }
    writer.close().unwrap();
}

#[test]
fn every_writer_encoding_gives_the_same_tables() {
    let sample = generated_sample(150_000, 5, 800);
    let rows = load(&sample);
    assert_eq!(rows.time.len(), 150_000);
    let baseline_out = tempfile::tempdir().unwrap();
    run(&[&sample], baseline_out.path(), MatchMode::Kql);
    let baseline = table_files(baseline_out.path());
    assert!(baseline.len() >= 5 * 3, "{}", baseline.len());
    assert!(!daily(baseline_out.path()).is_empty());

    let utc = Some(Arc::from("UTC"));
    let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    // Utf8 text and microsecond times, row groups and dictionary pages as given
    let rows = &rows;
    let utf8 = |row_group: usize, dictionary_page_bytes: Option<usize>| -> Box<dyn Fn(&Path) + '_> {
        Box::new(move |p: &Path| {
            let time = DataType::Timestamp(TimeUnit::Microsecond, None);
            write_arrow(rows, p, "Timestamp", time, DataType::Utf8, DataType::Int32, row_group, dictionary_page_bytes)
        })
    };
    let variants: Vec<(&str, Box<dyn Fn(&Path) + '_>)> = vec![
        ("int96", Box::new(|p: &Path| write_int96(&rows, p))),
        (
            "dictionary strings, ms without zone, long port",
            Box::new(|p: &Path| {
                write_arrow(
                    &rows,
                    p,
                    "Timestamp",
                    DataType::Timestamp(TimeUnit::Millisecond, None),
                    dict.clone(),
                    DataType::Int64,
                    1 << 20,
                    None,
                )
            }),
        ),
        (
            "large strings, ns UTC, 1000-row row groups",
            Box::new(|p: &Path| {
                write_arrow(
                    &rows,
                    p,
                    "Timestamp",
                    DataType::Timestamp(TimeUnit::Nanosecond, utc.clone()),
                    DataType::LargeUtf8,
                    DataType::Int32,
                    1000,
                    None,
                )
            }),
        ),
        (
            "string views, TimeGenerated",
            Box::new(|p: &Path| {
                write_arrow(
                    &rows,
                    p,
                    "TimeGenerated",
                    DataType::Timestamp(TimeUnit::Microsecond, utc.clone()),
                    DataType::Utf8View,
                    DataType::Int32,
                    30_000,
                    None,
                )
            }),
        ),
        ("dictionary strings in every chunk", utf8(5_000, None)),
        ("dictionaries falling back to plain pages", utf8(50_000, Some(4096))),
        ("no dictionaries", utf8(50_000, Some(0))),
    ];
    for (name, write) in &variants {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("events.parquet"));
        // an empty file beside it changes nothing
        write_arrow(
            &Rows { time: vec![], text: vec![vec![]; TEXT_COLUMNS.len()], port: vec![] },
            &dir.path().join("empty.parquet"),
            "Timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            DataType::Utf8,
            DataType::Int32,
            1000,
            None,
        );
        let out = tempfile::tempdir().unwrap();
        let outcome = run(&[dir.path()], out.path(), MatchMode::Kql);
        assert_eq!(outcome.record.stats.rows_scanned, 150_000, "{name}");
        assert_eq!(outcome.record.stats.rejects.total(), 0, "{name}");
        let got = table_files(out.path());
        assert_eq!(got.keys().collect::<Vec<_>>(), baseline.keys().collect::<Vec<_>>(), "{name}");
        for (file, text) in &baseline {
            assert!(got[file] == *text, "{name}: {file} differs");
        }
    }
}

#[test]
fn missing_optional_columns_still_give_the_reference_table() {
    let sample = generated_sample(150_000, 5, 800);
    let rows = load(&sample);
    let dir = tempfile::tempdir().unwrap();
    let micros: ArrayRef = Arc::new(TimestampMicrosecondArray::from(rows.time.clone()).with_timezone("UTC"));
    let column = |i: usize| -> ArrayRef { Arc::new(StringArray::from(rows.text[i].clone())) };
    let batch = RecordBatch::try_from_iter([
        ("Timestamp", micros),
        ("DeviceId", column(0)),
        ("ActionType", column(2)),
        ("RemoteUrl", column(3)),
    ])
    .unwrap();
    let path = dir.path().join("narrow.parquet");
    let mut writer = ArrowWriter::try_new(File::create(&path).unwrap(), batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();

    let (full, narrow) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run(&[&sample], full.path(), MatchMode::Kql);
    run(&[&path], narrow.path(), MatchMode::Kql);
    assert_eq!(daily(full.path()), daily(narrow.path()));
}

#[test]
fn row_groups_outside_the_window_are_not_read() {
    let sample = generated_sample(150_000, 5, 800);
    let rows = load(&sample);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small-groups.parquet");
    write_arrow(
        &rows,
        &path,
        "Timestamp",
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        DataType::Utf8,
        DataType::Int32,
        2000,
        None,
    );
    let all = tempfile::tempdir().unwrap();
    run(&[&path], all.path(), MatchMode::Kql);
    let days: Vec<String> =
        daily(all.path()).keys().map(|k| k.0.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    let (from, to) = (&days[1], &days[2]);

    let out = tempfile::tempdir().unwrap();
    let outcome = run_window(&[&path], out.path(), from, to);
    assert!(outcome.record.stats.row_groups_pruned > 20, "pruned {}", outcome.record.stats.row_groups_pruned);
    assert!(outcome.record.stats.rows_scanned < 150_000 * 3 / 4, "scanned {}", outcome.record.stats.rows_scanned);
    let want: std::collections::BTreeMap<_, _> =
        daily(all.path()).into_iter().filter(|((day, _), _)| day >= from && day <= to).collect();
    assert_eq!(daily(out.path()), want);
    assert_eq!(outcome.days.len(), 2);
}
