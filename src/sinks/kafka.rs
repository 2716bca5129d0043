//! `type = "kafka"` (being written).

use super::{BatchError, Record, SinkError};
use crate::config::KafkaSinkConfig;

pub struct KafkaWriter {
    config: KafkaSinkConfig,
}

impl KafkaWriter {
    /// # Errors
    /// [`SinkError::Setup`] when the client cannot be configured.
    pub fn new(config: &KafkaSinkConfig) -> Result<KafkaWriter, SinkError> {
        Ok(KafkaWriter {
            config: config.clone(),
        })
    }

    pub async fn send(&mut self, _records: &[Record]) -> Result<(), BatchError> {
        Err(BatchError::leading(
            0,
            SinkError::Send(format!(
                "kafka sink for {} not built yet",
                self.config.topic
            )),
        ))
    }
}
