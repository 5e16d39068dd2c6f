//! Single node: commands loop straight back to this node's control loop.

use tokio::sync::mpsc;

use super::{Control, ControlError, ControlEvent, Logged};

pub struct LocalControl {
    events: mpsc::UnboundedSender<ControlEvent>,
}

impl LocalControl {
    pub fn new(events: mpsc::UnboundedSender<ControlEvent>) -> Self {
        LocalControl { events }
    }
}

#[async_trait::async_trait]
impl Control for LocalControl {
    async fn send(&self, command: Logged) -> Result<(), ControlError> {
        self.events
            .send(ControlEvent::Command(command))
            .map_err(|_| ControlError::Unavailable("the node's control loop stopped".into()))
    }
}
