//! Building canonical batches: row by row (JSON lines, CSV) or by converting the columns a
//! columnar reader produced (Parquet).

use std::sync::Arc;

use arrow_array::builder::{Int32Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use arrow_array::{new_null_array, Array, ArrayRef, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, TimeUnit};

use crate::schema::{self, col, CANONICAL_COLUMNS};
use crate::time::{in_datetime_range, parse_timestamp_micros, MICROS_PER_DAY};

/// Rows per canonical batch built row by row.
pub const BATCH_ROWS: usize = 8192;

/// One row's values, borrowed from the input where possible.
#[derive(Debug, Default, Clone)]
pub struct RowValues<'a> {
    pub time_micros: i64,
    /// Indexed by canonical column position; `TIME` and `REMOTE_PORT` slots are unused.
    pub text: [Option<std::borrow::Cow<'a, str>>; CANONICAL_COLUMNS.len()],
    pub remote_port: Option<i32>,
}

/// Accumulates rows into canonical batches.
pub struct RowBuilder {
    time: TimestampMicrosecondBuilder,
    text: Vec<StringBuilder>,
    port: Int32Builder,
    rows: usize,
}

impl Default for RowBuilder {
    fn default() -> Self {
        RowBuilder {
            time: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            text: (0..CANONICAL_COLUMNS.len()).map(|_| StringBuilder::new()).collect(),
            port: Int32Builder::new(),
            rows: 0,
        }
    }
}

impl RowBuilder {
    pub fn push(&mut self, row: &RowValues<'_>) {
        self.time.append_value(row.time_micros);
        self.port.append_option(row.remote_port);
        for (i, builder) in self.text.iter_mut().enumerate() {
            if i != col::TIME && i != col::REMOTE_PORT {
                builder.append_option(row.text[i].as_deref());
            }
        }
        self.rows += 1;
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The batch so far; the builder starts again empty.
    pub fn finish(&mut self) -> RecordBatch {
        self.rows = 0;
        let columns: Vec<ArrayRef> = (0..CANONICAL_COLUMNS.len())
            .map(|i| -> ArrayRef {
                match i {
                    col::TIME => Arc::new(self.time.finish()),
                    col::REMOTE_PORT => Arc::new(self.port.finish()),
                    _ => Arc::new(self.text[i].finish()),
                }
            })
            .collect();
        RecordBatch::try_new(schema::canonical(), columns).expect("builders follow the canonical schema")
    }
}

/// One time value as read: microseconds, absent, or unreadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeCell {
    Micros(i64),
    Missing,
    Invalid,
    /// Before 0001-01-01 or after 9999-12-31 (see [`crate::time::in_datetime_range`]).
    OutOfRange,
}

/// Row-by-row access to any supported time column without materializing it: timestamps of
/// every unit and zone (INT96 comes out of the reader as nanoseconds), dates, and ISO text.
pub enum TimeReader {
    /// Integer timestamps and their conversion to microseconds.
    Ticks {
        values: arrow_buffer::ScalarBuffer<i64>,
        nulls: Option<arrow_buffer::NullBuffer>,
        unit: TimeUnit,
    },
    Date32 {
        values: arrow_buffer::ScalarBuffer<i32>,
        nulls: Option<arrow_buffer::NullBuffer>,
    },
    Text(arrow_array::StringArray),
}

impl TimeReader {
    /// Every row's time in microseconds, when the column is microseconds without a null (then
    /// rows can be counted by day without being looked at one by one).
    pub fn all_micros(&self) -> Option<&[i64]> {
        match self {
            TimeReader::Ticks { values, nulls, unit: TimeUnit::Microsecond }
                if nulls.as_ref().is_none_or(|n| n.null_count() == 0) =>
            {
                Some(values)
            }
            _ => None,
        }
    }

    pub fn new(array: &dyn Array) -> Result<TimeReader, String> {
        let ticks = |values: arrow_buffer::ScalarBuffer<i64>, unit| TimeReader::Ticks {
            values,
            nulls: array.logical_nulls(),
            unit,
        };
        Ok(match array.data_type() {
            DataType::Timestamp(TimeUnit::Second, _) => {
                ticks(array.as_primitive::<TimestampSecondType>().values().clone(), TimeUnit::Second)
            }
            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                ticks(array.as_primitive::<TimestampMillisecondType>().values().clone(), TimeUnit::Millisecond)
            }
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                ticks(array.as_primitive::<TimestampMicrosecondType>().values().clone(), TimeUnit::Microsecond)
            }
            DataType::Timestamp(TimeUnit::Nanosecond, _) => {
                ticks(array.as_primitive::<TimestampNanosecondType>().values().clone(), TimeUnit::Nanosecond)
            }
            DataType::Date64 => ticks(array.as_primitive::<Date64Type>().values().clone(), TimeUnit::Millisecond),
            DataType::Date32 => TimeReader::Date32 {
                values: array.as_primitive::<Date32Type>().values().clone(),
                nulls: array.logical_nulls(),
            },
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(_, _) => {
                let text = arrow_cast::cast(array, &DataType::Utf8).map_err(|e| e.to_string())?;
                TimeReader::Text(text.as_string::<i32>().clone())
            }
            other => return Err(format!("the time column has type {other}, which is not a timestamp")),
        })
    }

    #[inline]
    pub fn get(&self, row: usize) -> TimeCell {
        match self {
            TimeReader::Ticks { values, nulls, unit } => {
                if nulls.as_ref().is_some_and(|n| n.is_null(row)) {
                    return TimeCell::Missing;
                }
                let v = values[row];
                let micros = match unit {
                    TimeUnit::Second => v.checked_mul(1_000_000),
                    TimeUnit::Millisecond => v.checked_mul(1_000),
                    TimeUnit::Microsecond => Some(v),
                    TimeUnit::Nanosecond => Some(v.div_euclid(1_000)),
                };
                micros.filter(|&t| in_datetime_range(t)).map_or(TimeCell::OutOfRange, TimeCell::Micros)
            }
            TimeReader::Date32 { values, nulls } => {
                if nulls.as_ref().is_some_and(|n| n.is_null(row)) {
                    return TimeCell::Missing;
                }
                // A day count past ±292,000 years does not fit in microseconds.
                let micros = i64::from(values[row]).checked_mul(MICROS_PER_DAY);
                micros.filter(|&t| in_datetime_range(t)).map_or(TimeCell::OutOfRange, TimeCell::Micros)
            }
            TimeReader::Text(text) => {
                if text.is_null(row) || text.value(row).is_empty() {
                    TimeCell::Missing
                } else {
                    parse_timestamp_micros(text.value(row)).map_or(TimeCell::Invalid, TimeCell::Micros)
                }
            }
        }
    }
}

/// The reason a row whose `RemotePort` is not a port is rejected with, in every format.
pub const PORT_REJECTED: &str = "type: RemotePort";

/// Drops the rows whose `RemotePort` holds something that is not a port — negative, above
/// 65535, NaN, fractional, or text that is not a number — from every column and from `micros`,
/// and returns those values for the reject samples, each with its row's time (its day counted
/// the row, which is now a reject instead). A null port is a missing port, kept. Without
/// this, converting to the canonical Int32 would keep -1 and 70000 as ports and turn NaN into a
/// silent null.
pub fn drop_bad_ports(named: &mut [(&str, ArrayRef)], micros: &mut Vec<i64>) -> Result<Vec<(String, i64)>, String> {
    let Some(at) = named.iter().position(|(n, _)| *n == schema::REMOTE_PORT) else { return Ok(Vec::new()) };
    let cast = |array: &ArrayRef, to: &DataType| {
        arrow_cast::cast(array, to).map_err(|e| format!("column `{}` cannot be read: {e}", schema::REMOTE_PORT))
    };
    let mut column = named[at].1.clone();
    if let DataType::Dictionary(_, value) = column.data_type() {
        column = cast(&column, value)?;
    }
    let bad: Vec<Option<String>> = match column.data_type() {
        t if t.is_numeric() => {
            let values = cast(&column, &DataType::Float64)?;
            let ports = values.as_primitive::<arrow_array::types::Float64Type>();
            let port = |v: f64| v.is_finite() && v.fract() == 0.0 && (0.0..=65535.0).contains(&v);
            (0..ports.len())
                .map(|r| (ports.is_valid(r) && !port(ports.value(r))).then(|| ports.value(r).to_string()))
                .collect()
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let values = cast(&column, &DataType::Utf8)?;
            let text = values.as_string::<i32>();
            (0..text.len())
                .map(|r| {
                    (text.is_valid(r) && super::parse_port(text.value(r)).is_err()).then(|| text.value(r).to_string())
                })
                .collect()
        }
        // Anything else is for the conversion to accept or to fail on, naming the type.
        _ => return Ok(Vec::new()),
    };
    if bad.iter().all(Option::is_none) {
        return Ok(Vec::new());
    }
    let keep = arrow_array::BooleanArray::from(bad.iter().map(Option::is_none).collect::<Vec<bool>>());
    for (_, array) in named.iter_mut() {
        *array = arrow_select::filter::filter(array.as_ref(), &keep).map_err(|e| e.to_string())?;
    }
    let dropped = bad.into_iter().zip(micros.iter()).filter_map(|(port, &at)| port.map(|p| (p, at))).collect();
    let mut verdicts = keep.iter();
    micros.retain(|_| verdicts.next().flatten().unwrap_or(false));
    Ok(dropped)
}

/// Converts the columns a reader produced (any names, any string encodings) into a canonical
/// batch. `time_micros` holds the already-validated times of these rows. Text keyed into a
/// dictionary of strings (`UInt32` keys) stays so: the hunt reads it as it is.
pub fn from_columns(named: &[(&str, ArrayRef)], time_micros: Vec<i64>) -> Result<RecordBatch, String> {
    let rows = time_micros.len();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(CANONICAL_COLUMNS.len());
    let keyed_text = DataType::Dictionary(Box::new(DataType::UInt32), Box::new(DataType::Utf8));
    for (i, name) in CANONICAL_COLUMNS.iter().enumerate() {
        if i == col::TIME {
            columns.push(Arc::new(TimestampMicrosecondArray::from(time_micros.clone()).with_timezone("UTC")));
            continue;
        }
        let target = if i == col::REMOTE_PORT { DataType::Int32 } else { DataType::Utf8 };
        let column = match named.iter().find(|(n, _)| n == name) {
            Some((_, array)) if array.data_type() == &target => array.clone(),
            Some((_, array)) if target == DataType::Utf8 && array.data_type() == &keyed_text => array.clone(),
            Some((_, array)) => {
                let options = arrow_cast::CastOptions { safe: true, ..Default::default() };
                arrow_cast::cast_with_options(array, &target, &options)
                    .map_err(|e| format!("column `{name}` ({}) cannot be read as {target}: {e}", array.data_type()))?
            }
            None => new_null_array(&target, rows),
        };
        columns.push(column);
    }
    let schema = schema::canonical();
    let fields: Vec<arrow_schema::FieldRef> = schema
        .fields()
        .iter()
        .zip(&columns)
        .map(|(field, column)| match field.data_type() == column.data_type() {
            true => field.clone(),
            false => Arc::new(field.as_ref().clone().with_data_type(column.data_type().clone())),
        })
        .collect();
    RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), columns).map_err(|e| e.to_string())
}
