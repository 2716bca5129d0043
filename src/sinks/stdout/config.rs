//! `type = "stdout"` options: only the ones every sink takes.

use crate::sinks::config::sink_options;

sink_options! {
    /// `type = "stdout"`: events to standard output, one per line.
    pub(crate) struct RawStdoutSink {
    }
}
