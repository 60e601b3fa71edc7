//! The canonical event schema: the DeviceNetworkEvents columns the hunt reads.
//!
//! Every source yields Arrow batches of exactly this schema (a column missing from the input is
//! all nulls), so the hunt never knows where a batch came from. Nothing else is decoded. A text
//! column is `Utf8`, or `Dictionary(UInt32, Utf8)` where a Parquet source read a
//! dictionary-encoded column: its keys are the file's, so the hunt works out what it needs of a
//! value once per dictionary entry rather than once per row.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

pub const TIMESTAMP: &str = "Timestamp";
pub const TIME_GENERATED: &str = "TimeGenerated";
pub const DEVICE_ID: &str = "DeviceId";
pub const DEVICE_NAME: &str = "DeviceName";
pub const ACTION_TYPE: &str = "ActionType";
pub const REMOTE_URL: &str = "RemoteUrl";
pub const REMOTE_IP: &str = "RemoteIP";
pub const REMOTE_PORT: &str = "RemotePort";
pub const PROTOCOL: &str = "Protocol";
pub const PROCESS_FILE_NAME: &str = "InitiatingProcessFileName";
pub const PROCESS_FOLDER_PATH: &str = "InitiatingProcessFolderPath";
pub const PROCESS_SHA1: &str = "InitiatingProcessSHA1";
pub const PROCESS_COMPANY: &str = "InitiatingProcessVersionInfoCompanyName";
pub const PROCESS_ACCOUNT: &str = "InitiatingProcessAccountName";
pub const PROCESS_PARENT: &str = "InitiatingProcessParentFileName";
pub const PROCESS_COMMAND_LINE: &str = "InitiatingProcessCommandLine";
pub const MACHINE_GROUP: &str = "MachineGroup";

/// Column positions in the canonical batch.
pub mod col {
    pub const TIME: usize = 0;
    pub const DEVICE_ID: usize = 1;
    pub const DEVICE_NAME: usize = 2;
    pub const ACTION_TYPE: usize = 3;
    pub const REMOTE_URL: usize = 4;
    pub const REMOTE_IP: usize = 5;
    pub const REMOTE_PORT: usize = 6;
    pub const PROTOCOL: usize = 7;
    pub const PROCESS_FILE_NAME: usize = 8;
    pub const PROCESS_FOLDER_PATH: usize = 9;
    pub const PROCESS_SHA1: usize = 10;
    pub const PROCESS_COMPANY: usize = 11;
    pub const PROCESS_ACCOUNT: usize = 12;
    pub const PROCESS_PARENT: usize = 13;
    pub const PROCESS_COMMAND_LINE: usize = 14;
    pub const MACHINE_GROUP: usize = 15;
}

/// The string columns of the canonical schema, in order after the time column,
/// except `RemotePort` (an integer) which sits at [`col::REMOTE_PORT`].
pub const CANONICAL_COLUMNS: [&str; 16] = [
    TIMESTAMP,
    DEVICE_ID,
    DEVICE_NAME,
    ACTION_TYPE,
    REMOTE_URL,
    REMOTE_IP,
    REMOTE_PORT,
    PROTOCOL,
    PROCESS_FILE_NAME,
    PROCESS_FOLDER_PATH,
    PROCESS_SHA1,
    PROCESS_COMPANY,
    PROCESS_ACCOUNT,
    PROCESS_PARENT,
    PROCESS_COMMAND_LINE,
    MACHINE_GROUP,
];

/// The canonical batch schema. The time column is named `Timestamp` whichever input column
/// (`Timestamp` or `TimeGenerated`) it came from.
pub fn canonical() -> SchemaRef {
    let fields: Vec<Field> = CANONICAL_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, name)| match i {
            col::TIME => Field::new(*name, DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
            col::REMOTE_PORT => Field::new(*name, DataType::Int32, true),
            _ => Field::new(*name, DataType::Utf8, true),
        })
        .collect();
    Arc::new(Schema::new(fields))
}
