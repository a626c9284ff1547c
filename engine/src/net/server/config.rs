//! The server's settings ([`ServerConfig`]): its limits and timers, and egress flow control.

use crate::config::{EgressConfig, NetConfig};

use crate::net::protocol::FrameLimit;

/// The server's settings: its limits and timers, and egress flow control. Defaults suit
/// 15,000 connections on one machine; [`ServerConfig::from_config`] takes them from an
/// engine configuration (a TOML file's `[net]` and `[egress]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerConfig {
    /// Connection limit, frame size, timeouts and per-turn budgets.
    pub net: NetConfig,
    /// Egress flow control of every connection's replies (SPEC 4).
    pub egress: EgressConfig,
}

impl ServerConfig {
    /// The server's settings from an engine configuration: its `net` limits and timers and
    /// its `egress` flow control.
    ///
    /// ```
    /// use spillway::config::Config;
    /// use spillway::net::server::ServerConfig;
    ///
    /// let config = Config::from_toml_str("[net]\nmax_connections = 500\n").unwrap();
    /// assert_eq!(ServerConfig::from_config(&config).net.max_connections, 500);
    /// ```
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            net: config.net,
            egress: config.egress,
        }
    }

    /// The largest frame accepted, as announced in Welcome: `net.max_frame_bytes`, clamped
    /// into [`FrameLimit`]'s range (a validated configuration is already inside it).
    pub fn frame_limit(&self) -> FrameLimit {
        let bytes = self.net.max_frame_bytes.clamp(
            FrameLimit::MIN.max_frame_bytes(),
            FrameLimit::MAX.max_frame_bytes(),
        );
        FrameLimit::new(bytes).expect("clamped into range")
    }
}
