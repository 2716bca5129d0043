//! Wall-clock time as events carry it, and the time-ordered ids (UUIDv7) of requests, events
//! and chain records.
//!
//! A [`Timestamp`] stays a real instant until it is written out: a sink that needs epoch
//! milliseconds (HEC `time`, the Kafka record timestamp, CEF `rt`) asks for them instead of
//! parsing the RFC 3339 text back.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An instant, shown as RFC 3339 UTC with milliseconds (`2023-11-14T22:13:20.123Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(SystemTime);

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp(SystemTime::now())
    }

    /// Milliseconds since the Unix epoch (0 for an instant before it).
    pub fn unix_millis(self) -> i64 {
        self.0
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    /// The instant `millis` milliseconds after the Unix epoch.
    pub fn from_unix_millis(millis: u64) -> Timestamp {
        Timestamp(UNIX_EPOCH + Duration::from_millis(millis))
    }

    /// The instant an RFC 3339 UTC text (as events write it) names.
    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        humantime::parse_rfc3339(text).ok().map(Timestamp)
    }

    pub fn system_time(self) -> SystemTime {
        self.0
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Timestamp {
        Timestamp(t)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_rfc3339_millis(self.0).fmt(f)
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A time-ordered UUID (v7) for request and event ids. Its 74 random bits come from the
/// thread's CSPRNG (ChaCha, seeded from the OS): `Uuid::now_v7()` would make a `getrandom`
/// system call for every id, two or three per request.
pub fn new_uuid_v7() -> uuid::Uuid {
    let millis = u64::try_from(Timestamp::now().unix_millis()).unwrap_or(0);
    let random: [u8; 10] = rand::random();
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_show_rfc3339_millis_and_give_epoch_millis() {
        let t = Timestamp::from_unix_millis(1_700_000_000_123);
        assert_eq!(t.to_string(), "2023-11-14T22:13:20.123Z");
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "\"2023-11-14T22:13:20.123Z\""
        );
        assert_eq!(t.unix_millis(), 1_700_000_000_123);
        let before_epoch = Timestamp::from(UNIX_EPOCH - Duration::from_secs(1));
        assert_eq!(before_epoch.unix_millis(), 0);
    }

    #[test]
    fn ids_are_uuid_v7_in_time_order() {
        let a = new_uuid_v7();
        std::thread::sleep(Duration::from_millis(2));
        let b = new_uuid_v7();
        assert_eq!(a.get_version_num(), 7);
        assert!(a < b);
    }
}
