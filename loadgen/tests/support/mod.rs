//! What the TCP tests share: a server on 127.0.0.1:0 with a one-shard engine behind it.

use spillway::config::Config;
use spillway::engine::Engine;
use spillway::handler::Handler;
use spillway::net::server::{ServerConfig, TcpServer};

/// A TCP server with a one-shard engine behind it.
pub struct Served {
    pub server: TcpServer,
    pub engine: Engine,
}

/// A server on a free loopback port whose engine serves `handler`.
pub fn serve<H: Handler + Clone>(handler: H) -> Served {
    let server = TcpServer::bind("127.0.0.1:0", ServerConfig::default()).expect("binding");
    let config = Config {
        shards: 1,
        ..Config::default()
    };
    let engine = Engine::builder()
        .config(config)
        .handler(server.front_end(handler))
        .start()
        .expect("starting the engine");
    Served { server, engine }
}
