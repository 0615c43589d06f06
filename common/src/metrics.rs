//! Serves the process's Prometheus registry on `/metrics` (and `/healthz`).

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::net::TcpListener;

fn render(registry: &Registry) -> Response<Full<Bytes>> {
    let mut buf = Vec::with_capacity(16 * 1024);
    let enc = TextEncoder::new();
    match enc.encode(&registry.gather(), &mut buf) {
        Ok(()) => Response::builder()
            .header("content-type", enc.format_type())
            .body(Full::new(Bytes::from(buf)))
            .expect("static response"),
        Err(e) => Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body(Full::new(Bytes::from(e.to_string())))
            .expect("static response"),
    }
}

/// Binds `listen` (e.g. `127.0.0.1:9101`) and serves until the task is dropped.
/// Returns the bound address (useful with port 0 in tests) and the server task.
pub async fn serve(
    listen: &str,
    registry: Registry,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let addr: SocketAddr = listen.parse().with_context(|| {
        format!("metrics_listen {listen:?} is not an address like 127.0.0.1:9101")
    })?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics endpoint on {addr}"))?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let registry = registry.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let registry = registry.clone();
                    async move {
                        Ok::<_, Infallible>(match req.uri().path() {
                            "/metrics" => render(&registry),
                            "/healthz" => Response::new(Full::new(Bytes::from_static(b"ok\n"))),
                            _ => Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::from_static(b"try /metrics\n")))
                                .expect("static response"),
                        })
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok((bound, task))
}

/// The sum of a counter vector over all its label values.
pub fn counter_vec_total(c: &prometheus::IntCounterVec) -> u64 {
    use prometheus::core::Collector;
    c.collect()
        .iter()
        .flat_map(|f| {
            f.get_metric()
                .iter()
                .map(|m| m.get_counter().value() as u64)
        })
        .sum()
}

/// Decides when a worker run with `--stop-after-idle` is done: no new message
/// for `idle`, and (before the first message, while the group join may still
/// be running) at least 30 s since start.
#[derive(Debug)]
pub struct IdleWatch {
    idle: std::time::Duration,
    last_total: u64,
    last_change: std::time::Instant,
}

impl IdleWatch {
    pub fn new(idle: std::time::Duration) -> Self {
        IdleWatch {
            idle,
            last_total: 0,
            last_change: std::time::Instant::now(),
        }
    }

    /// Work other than reading is going on (writes in flight, reading paused
    /// by backpressure): the quiet time starts again. A worker paused while
    /// ClickHouse was down otherwise counted the outage as idle time and
    /// stopped the moment its last write went through, before reading on.
    pub fn busy(&mut self, total: u64) {
        self.last_total = total;
        self.last_change = std::time::Instant::now();
    }

    /// Feed the current message total; true once the run has been idle long enough.
    pub fn is_idle(&mut self, total: u64) -> bool {
        if total != self.last_total {
            self.last_total = total;
            self.last_change = std::time::Instant::now();
            return false;
        }
        let quiet = self.last_change.elapsed();
        quiet >= self.idle
            && (total > 0 || quiet >= self.idle.max(std::time::Duration::from_secs(30)))
    }
}

/// One process's registry with its metric-name prefix (`adlog_ingest`,
/// `adlog_joiner`): each constructor creates a metric and registers it, so no
/// metric is defined without being served. Names are fixed at compile time,
/// so an invalid or duplicate one is a bug and panics at startup.
pub struct Registrar {
    pub registry: Registry,
}

impl Registrar {
    pub fn new(prefix: &str) -> Self {
        Registrar {
            registry: Registry::new_custom(Some(prefix.into()), None)
                .expect("valid registry prefix"),
        }
    }

    fn register<C: prometheus::core::Collector + Clone + 'static>(&self, c: C) -> C {
        self.registry
            .register(Box::new(c.clone()))
            .expect("unique metric");
        c
    }

    pub fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help).expect("valid metric"))
    }

    pub fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    pub fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help).expect("valid metric"))
    }

    pub fn histogram(&self, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
        self.register(
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid metric"),
        )
    }

    pub fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        buckets: Vec<f64>,
        labels: &[&str],
    ) -> HistogramVec {
        self.register(
            HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
                .expect("valid metric"),
        )
    }

    /// `consumer_lag{topic,partition}`, set from librdkafka's statistics by
    /// [`crate::kafka::record_consumer_lag`].
    pub fn consumer_lag(&self) -> IntGaugeVec {
        self.register(
            IntGaugeVec::new(
                Opts::new(
                    "consumer_lag",
                    "Messages behind the partition's high watermark",
                ),
                &["topic", "partition"],
            )
            .expect("valid metric"),
        )
    }
}
