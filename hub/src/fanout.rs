//! The node's fan-out task: events from the broker and presence, into local outboxes.
//!
//! One task per node, fed through channels, so the broker and presence store never
//! touch sessions. It does no I/O: each event costs a registry lookup and one
//! non-blocking push per local receiver. A broker resync arrives on the same stream as
//! the team's messages, so the team's connections are closed (1012) exactly after the
//! last message they could be given in order.

use std::sync::Arc;

use teamhub_presence::PresenceEvent;
use tokio::sync::mpsc::UnboundedReceiver;

use teamhub_protocol::CloseCode;

use crate::broker::BrokerEvent;
use crate::event::Event;
use crate::node::Node;

const BATCH: usize = 256;

pub async fn run(
    node: Arc<Node>,
    mut events: UnboundedReceiver<BrokerEvent>,
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
                    match ev {
                        BrokerEvent::Message(ev) => {
                            node.registry.fanout(&ev);
                        }
                        BrokerEvent::Resync(r) => {
                            let closed = node.registry.close_team(
                                &r.team,
                                CloseCode::Draining,
                                "team stream lost continuity: reconnect and recover with since",
                            );
                            tracing::warn!(team = %r.team, reason = ?r.reason, closed, "team resynchronised");
                        }
                    }
                }
            }
            n = presence.recv_many(&mut presence_batch, BATCH) => {
                if n == 0 {
                    break;
                }
                for p in presence_batch.drain(..) {
                    if let Some(occupancy) = p.occupancy {
                        node.occupancy.report(&p.team, occupancy, p.version);
                    }
                    node.registry.fanout(&Arc::new(Event::presence(p)));
                }
            }
        }
    }
}
