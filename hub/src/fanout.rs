//! The node's fan-out task: events from the broker and presence, into local outboxes.
//!
//! One task per node, fed through channels, so the broker and presence store never
//! touch sessions. It does no I/O: each event costs a registry lookup and one
//! non-blocking push per local receiver.

use std::sync::Arc;

use teamhub_presence::PresenceEvent;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::event::Event;
use crate::node::Node;

const BATCH: usize = 256;

pub async fn run(
    node: Arc<Node>,
    mut events: UnboundedReceiver<Arc<Event>>,
    mut presence: UnboundedReceiver<PresenceEvent>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut presence_batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            n = events.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    break;
                }
                for ev in batch.drain(..) {
                    node.registry.fanout(&ev);
                }
            }
            n = presence.recv_many(&mut presence_batch, BATCH) => {
                if n == 0 {
                    break;
                }
                for p in presence_batch.drain(..) {
                    node.registry.fanout(&Arc::new(Event::presence(p)));
                }
            }
        }
    }
}
