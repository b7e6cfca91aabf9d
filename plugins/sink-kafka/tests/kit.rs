//! The sink test kit, run against the `kafka` sink and librdkafka's mock cluster (a
//! stall is its broker taken down; the cluster lives on a thread of its own, since
//! it may not cross threads).

mod common;

use std::sync::mpsc;
use std::sync::Mutex;

use master_events_sinktest::{Observed, Target};
use rdkafka::mocking::MockCluster;

// Links the crate, so that its registration is there.
use master_events_sink_kafka as _;

const TOPIC: &str = "kit";

enum Command {
    Down,
    Up,
}

/// A mock cluster of one broker, with the kit's topic, on a thread of its own; it
/// ends when the target is dropped.
struct KafkaTarget {
    brokers: String,
    commands: Mutex<mpsc::Sender<Command>>,
}

impl KafkaTarget {
    fn start() -> KafkaTarget {
        let (commands, rx) = mpsc::channel::<Command>();
        let (ready, brokers) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            let cluster = MockCluster::new(1).expect("mock cluster");
            cluster.create_topic(TOPIC, 1, 1).expect("topic");
            ready
                .send(cluster.bootstrap_servers())
                .expect("the target waits");
            // Until the target (the sender) is dropped.
            while let Ok(command) = rx.recv() {
                match command {
                    Command::Down => cluster.broker_down(1).expect("down"),
                    Command::Up => cluster.broker_up(1).expect("up"),
                }
            }
        });
        KafkaTarget {
            brokers: brokers.recv().expect("the mock cluster starts"),
            commands: Mutex::new(commands),
        }
    }

    fn send(&self, command: Command) {
        self.commands
            .lock()
            .expect("lock")
            .send(command)
            .expect("the mock cluster runs");
    }
}

impl Target for KafkaTarget {
    fn config(&self) -> String {
        format!(
            "brokers = {:?}\ntopic = {TOPIC:?}\ncluster = \"kit\"\ntransaction_timeout_ms = 3000\nshutdown_timeout_ms = 20000",
            self.brokers
        )
    }

    fn observed(&self) -> Vec<Observed> {
        common::records(&self.brokers, TOPIC)
            .iter()
            .filter_map(|r| Observed::from_line(r.value.as_bytes()))
            .collect()
    }

    fn stall(&self) {
        self.send(Command::Down);
    }

    fn resume(&self) {
        self.send(Command::Up);
    }
}

master_events_sinktest::kit_tests!(sink = "kafka", target = KafkaTarget::start());
