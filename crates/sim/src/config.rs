//! What a simulated scenario is made of: [`ScenarioConfig`], its validation, and the
//! naming of the simulated nodes.
//!
//! Owns: the knobs of the simulation and their limits, the node names
//! (`n_0@10.17.2.163`, ...) and hosts (`10.17.2.163:12000`, ...) of the simulated
//! cluster, and the count of vbucket moves a configuration makes.
//!
//! Promises: [`ScenarioConfig::validate`] accepts exactly the configurations that
//! [`crate::scenario`] uses as they are; any other is brought within the limits
//! ([`ScenarioConfig::sanitized`]) rather than refused, so building a scenario never
//! fails. [`vbucket_moves`] counts the moves of the sanitized configuration.

/// The IP address every simulated node listens on (one machine, several ports, like
/// ns_server's `cluster_run`).
const IP: &str = "10.17.2.163";

/// The memcached port of node 0; node `i` listens on `12000 + 2 * i`.
const FIRST_PORT: usize = 12000;

/// The most nodes a scenario can have before the added one (their ports must stay
/// below 65536).
pub const MAX_NODES: usize = 1024;

/// The bucket password the simulator hands to `createBucket`. It is redacted when the
/// event is built, so it never reaches a line; tests check for it.
pub const SIMULATED_PASSWORD: &str = "s3cr3t-demo-password";

/// The name of simulated node `i`, e.g. `n_0@10.17.2.163`.
pub fn node_name(i: usize) -> String {
    format!("n_{i}@{IP}")
}

/// The host (`ip:port`) of simulated node `i`, e.g. `10.17.2.163:12000`.
pub fn host(i: usize) -> String {
    format!("{IP}:{}", FIRST_PORT + 2 * i)
}

/// The shape of a simulated scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct ScenarioConfig {
    /// Nodes in the cluster at the start; the rebalance adds one more. At least 1, at
    /// most [`MAX_NODES`].
    pub nodes: usize,
    /// vbuckets per bucket. At least 1.
    pub vbuckets: u16,
    /// The buckets to create, by name (non-empty names, no duplicates).
    pub buckets: Vec<String>,
    /// Seeds every random choice: which vbuckets move, how moves interleave, seqnos,
    /// which node fails.
    pub seed: u64,
    /// Whether an auto-failover of one node follows the rebalance.
    pub with_failover: bool,
    /// The fraction of each bucket's vbuckets that the rebalance moves, in `0.0..=1.0`
    /// (1.0: every vbucket moves; about `1 / (nodes + 1)` is what a real rebalance
    /// that adds one node moves).
    pub move_fraction: f64,
    /// How many vbucket moves are in flight at once (ns_server's default is 4 per
    /// node). At least 1.
    pub concurrent_moves: usize,
}

impl Default for ScenarioConfig {
    /// Three nodes plus one added, 1024 vbuckets, bucket `default`, seed 0, every
    /// vbucket moving four at a time, then a failover.
    fn default() -> Self {
        ScenarioConfig {
            nodes: 3,
            vbuckets: 1024,
            buckets: vec!["default".to_owned()],
            seed: 0,
            with_failover: true,
            move_fraction: 1.0,
            concurrent_moves: 4,
        }
    }
}

/// Why a [`ScenarioConfig`] is outside the simulator's limits.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// `nodes` is 0 or above [`MAX_NODES`].
    #[error("nodes must be between 1 and {MAX_NODES}, not {0}")]
    Nodes(usize),
    /// `vbuckets` is 0.
    #[error("vbuckets must be at least 1")]
    NoVbuckets,
    /// A bucket name is empty.
    #[error("bucket names must not be empty")]
    EmptyBucketName,
    /// A bucket name appears twice.
    #[error("bucket {0:?} is named twice")]
    DuplicateBucket(String),
    /// `move_fraction` is not a number in `0.0..=1.0`.
    #[error("move_fraction must be between 0 and 1, not {0}")]
    MoveFraction(f64),
    /// `concurrent_moves` is 0.
    #[error("concurrent_moves must be at least 1")]
    NoConcurrency,
}

impl ScenarioConfig {
    /// Checks that every knob is within the simulator's limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.nodes == 0 || self.nodes > MAX_NODES {
            return Err(ConfigError::Nodes(self.nodes));
        }
        if self.vbuckets == 0 {
            return Err(ConfigError::NoVbuckets);
        }
        for (i, name) in self.buckets.iter().enumerate() {
            if name.is_empty() {
                return Err(ConfigError::EmptyBucketName);
            }
            if self.buckets[..i].contains(name) {
                return Err(ConfigError::DuplicateBucket(name.clone()));
            }
        }
        if !(0.0..=1.0).contains(&self.move_fraction) {
            return Err(ConfigError::MoveFraction(self.move_fraction));
        }
        if self.concurrent_moves == 0 {
            return Err(ConfigError::NoConcurrency);
        }
        Ok(())
    }

    /// This configuration brought within the limits: counts clamped to their range,
    /// a fraction that is not a number taken as 0, empty and repeated bucket names
    /// dropped. A valid configuration is returned unchanged.
    pub fn sanitized(&self) -> ScenarioConfig {
        let mut buckets: Vec<String> = Vec::with_capacity(self.buckets.len());
        for name in &self.buckets {
            if !name.is_empty() && !buckets.contains(name) {
                buckets.push(name.clone());
            }
        }
        let move_fraction = if self.move_fraction.is_nan() {
            0.0
        } else {
            self.move_fraction.clamp(0.0, 1.0)
        };
        ScenarioConfig {
            nodes: self.nodes.clamp(1, MAX_NODES),
            vbuckets: self.vbuckets.max(1),
            buckets,
            seed: self.seed,
            with_failover: self.with_failover,
            move_fraction,
            concurrent_moves: self.concurrent_moves.max(1),
        }
    }

    /// How many vbuckets of each bucket move (of a sanitized configuration).
    pub(crate) fn moves_per_bucket(&self) -> usize {
        let vbuckets = usize::from(self.vbuckets);
        // move_fraction is in 0..=1 here, so the product is in 0..=vbuckets.
        ((vbuckets as f64 * self.move_fraction).round() as usize).min(vbuckets)
    }
}

/// How many vbucket moves the rebalance of `config` makes, over all buckets: the
/// number of `vbucketMoveStart` (and of `vbucketMoveDone`) events its scenario yields.
pub fn vbucket_moves(config: &ScenarioConfig) -> usize {
    let config = config.sanitized();
    config.buckets.len() * config.moves_per_bucket()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_configuration_is_valid_and_moves_every_vbucket() {
        let config = ScenarioConfig::default();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.sanitized(), config);
        assert_eq!(vbucket_moves(&config), 1024);
    }

    #[test]
    fn out_of_range_knobs_are_reported_and_clamped() {
        let bad = ScenarioConfig {
            nodes: 0,
            ..ScenarioConfig::default()
        };
        assert_eq!(bad.validate(), Err(ConfigError::Nodes(0)));
        assert_eq!(bad.sanitized().nodes, 1);

        let bad = ScenarioConfig {
            move_fraction: f64::NAN,
            ..ScenarioConfig::default()
        };
        assert!(matches!(bad.validate(), Err(ConfigError::MoveFraction(_))));
        assert_eq!(vbucket_moves(&bad), 0);

        let bad = ScenarioConfig {
            move_fraction: 2.0,
            ..ScenarioConfig::default()
        };
        assert_eq!(vbucket_moves(&bad), 1024);

        let bad = ScenarioConfig {
            buckets: vec!["a".into(), String::new(), "a".into(), "b".into()],
            ..ScenarioConfig::default()
        };
        assert_eq!(bad.validate(), Err(ConfigError::EmptyBucketName));
        assert_eq!(bad.sanitized().buckets, ["a", "b"]);
    }

    #[test]
    fn a_quarter_of_the_vbuckets_move_at_fraction_one_quarter() {
        let config = ScenarioConfig {
            move_fraction: 0.25,
            buckets: vec!["a".into(), "b".into()],
            ..ScenarioConfig::default()
        };
        assert_eq!(vbucket_moves(&config), 512);
    }

    #[test]
    fn nodes_are_named_like_cluster_run() {
        assert_eq!(node_name(0), "n_0@10.17.2.163");
        assert_eq!(host(0), "10.17.2.163:12000");
        assert_eq!(host(3), "10.17.2.163:12006");
    }
}
