//! Raw baselines: no framework, no encoding, a 4-byte length prefix.
//!
//! * ping-pong: one connection per in-flight call, write a frame, read the echo.
//!   The floor for latency: a socket round trip and nothing else.
//! * pipelined: every in-flight call on one connection (on each of the cell's
//!   connections, for the many-client shapes); the server echoes bytes as they
//!   come, the client keeps `c` frames outstanding. The ceiling for throughput
//!   on one connection.

use crate::load::{drive, process_cpu, Caller, Cell, Plan, Runtimes, Stats, Tally};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

fn frame(size: usize) -> Vec<u8> {
    let mut frame = (size as u32).to_be_bytes().to_vec();
    frame.extend(std::iter::repeat_n(b'x', size));
    frame
}

/// Echo server: copies bytes back as they arrive (frames are echoed verbatim).
async fn serve(listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

fn start_server(
    runtimes: &Runtimes,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = runtimes.server.block_on(TcpListener::bind("127.0.0.1:0"))?;
    let address = listener.local_addr()?;
    Ok((address, runtimes.server.spawn(serve(listener))))
}

/// One connection per caller, so every clone of the caller owns its socket.
struct PingPong {
    address: std::net::SocketAddr,
    frame: Arc<Vec<u8>>,
    stream: tokio::sync::Mutex<Option<TcpStream>>,
    buf: tokio::sync::Mutex<Vec<u8>>,
}

#[derive(Clone)]
struct PingPongCaller(Arc<PingPong>);

impl Caller for PingPongCaller {
    async fn call(&self) -> anyhow::Result<()> {
        let mut stream_slot = self.0.stream.lock().await;
        if stream_slot.is_none() {
            let stream = TcpStream::connect(self.0.address).await?;
            stream.set_nodelay(true)?;
            *stream_slot = Some(stream);
        }
        let stream = stream_slot.as_mut().expect("connected above");
        stream.write_all(&self.0.frame).await?;
        let mut buf = self.0.buf.lock().await;
        stream.read_exact(&mut buf[..]).await?;
        anyhow::ensure!(buf[..] == self.0.frame[..], "wrong echo");
        Ok(())
    }
}

pub(crate) fn run_ping_pong(runtimes: &Runtimes, plan: &Plan, cell: Cell) -> anyhow::Result<Stats> {
    let (address, server) = start_server(runtimes)?;
    let frame = Arc::new(frame(cell.payload));
    // The closed loop clones the caller per loop; give each loop its own connection
    // by handing out distinct callers through a pool the loops draw from.
    let pool = Arc::new(Mutex::new(
        (0..cell.concurrency)
            .map(|_| {
                PingPongCaller(Arc::new(PingPong {
                    address,
                    frame: frame.clone(),
                    stream: tokio::sync::Mutex::new(None),
                    buf: tokio::sync::Mutex::new(vec![0u8; frame.len()]),
                }))
            })
            .collect::<Vec<_>>(),
    ));
    let caller = PooledCaller {
        pool,
        mine: Arc::new(Mutex::new(None)),
    };
    let stats = drive(runtimes, plan, cell, caller);
    server.abort();
    Ok(stats)
}

/// Hands each clone (each loop of the closed loop) its own [`PingPongCaller`].
struct PooledCaller {
    pool: Arc<Mutex<Vec<PingPongCaller>>>,
    mine: Arc<Mutex<Option<PingPongCaller>>>,
}

impl Clone for PooledCaller {
    fn clone(&self) -> Self {
        PooledCaller {
            pool: self.pool.clone(),
            mine: Arc::new(Mutex::new(None)),
        }
    }
}

impl Drop for PooledCaller {
    fn drop(&mut self) {
        // Hand the connection back for the next phase's loops.
        if let Some(caller) = self.mine.lock().unwrap_or_else(|e| e.into_inner()).take() {
            self.pool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(caller);
        }
    }
}

impl Caller for PooledCaller {
    async fn call(&self) -> anyhow::Result<()> {
        let caller = {
            let mut mine = self.mine.lock().unwrap_or_else(|e| e.into_inner());
            if mine.is_none() {
                let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
                let taken = pool
                    .pop()
                    .ok_or_else(|| anyhow::anyhow!("connection pool exhausted"))?;
                *mine = Some(taken);
            }
            mine.clone().expect("set above")
        };
        caller.call().await
    }
}

pub(crate) fn run_pipelined(runtimes: &Runtimes, plan: &Plan, cell: Cell) -> anyhow::Result<Stats> {
    let (address, server) = start_server(runtimes)?;
    let frame = Arc::new(frame(cell.payload));
    let (connections, warmup, duration) = (cell.connections, plan.warmup, plan.duration);
    let each = cell.concurrency / connections;
    let stats = runtimes.client.block_on(async move {
        let start = Instant::now();
        let measure_from = start + warmup;
        let stop_at = measure_from + duration;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..connections {
            let frame = frame.clone();
            tasks.spawn(pipelined_connection(
                address,
                frame,
                each,
                measure_from,
                stop_at,
            ));
        }
        tokio::time::sleep_until(measure_from.into()).await;
        let (cpu_start, measured_start) = (process_cpu(), Instant::now());
        let mut tally = Tally::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(connection)) => tally.merge(connection),
                Ok(Err(error)) => tally.failed(format_args!("{error:#}")),
                Err(error) => tally.failed(format_args!("connection task ended: {error}")),
            }
        }
        Ok::<_, anyhow::Error>(tally.into_stats(
            Instant::now().saturating_duration_since(measured_start),
            process_cpu().saturating_sub(cpu_start),
        ))
    })?;
    server.abort();
    Ok(stats)
}

/// One pipelined connection: keeps `concurrency` frames outstanding until
/// `stop_at`, recording the calls answered from `measure_from` on.
async fn pipelined_connection(
    address: std::net::SocketAddr,
    frame: Arc<Vec<u8>>,
    concurrency: usize,
    measure_from: Instant,
    stop_at: Instant,
) -> anyhow::Result<Tally> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();
    let permits = Arc::new(Semaphore::new(concurrency));
    let sent_at: Arc<Mutex<VecDeque<Instant>>> = Arc::default();

    let writer_task = {
        let permits = permits.clone();
        let sent_at = sent_at.clone();
        let frame = frame.clone();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(frame.len() * concurrency);
            loop {
                let Ok(first) = permits.acquire().await else {
                    return;
                };
                first.forget();
                let mut n = 1;
                while let Ok(more) = permits.try_acquire() {
                    more.forget();
                    n += 1;
                }
                if Instant::now() >= stop_at {
                    return;
                }
                batch.clear();
                {
                    let mut queue = sent_at.lock().unwrap_or_else(|e| e.into_inner());
                    let now = Instant::now();
                    for _ in 0..n {
                        batch.extend_from_slice(&frame);
                        queue.push_back(now);
                    }
                }
                if writer.write_all(&batch).await.is_err() {
                    return;
                }
            }
        })
    };

    let mut tally = Tally::new();
    let frame_len = frame.len();
    let mut buf = vec![0u8; 256 * 1024];
    let mut pending = 0usize; // bytes of a partial frame already read
    loop {
        if Instant::now() >= stop_at {
            break;
        }
        let read = tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buf)).await;
        let n = match read {
            Ok(Ok(n)) if n > 0 => n,
            // Past the deadline the writer stops and drops its half, and the
            // server's echo of that end can reach a read in progress: the
            // normal end of the phase, not an error.
            _ if Instant::now() >= stop_at => break,
            Ok(Ok(_)) => {
                tally.failed("the server closed the connection");
                break;
            }
            Ok(Err(error)) => {
                tally.failed(format_args!("read: {error}"));
                break;
            }
            Err(_) => {
                tally.failed("no echo for 5 s");
                break;
            }
        };
        // Every echoed byte is checked, as every other system's client
        // checks its whole echo: the stream is the frame, repeated.
        let mut checked = 0;
        while checked < n {
            let at = (pending + checked) % frame_len;
            let take = (n - checked).min(frame_len - at);
            if buf[checked..checked + take] != frame[at..at + take] {
                tally.failed("the echo differs from what was sent");
            }
            checked += take;
        }
        pending += n;
        let whole = pending / frame_len;
        pending %= frame_len;
        if whole > 0 {
            let now = Instant::now();
            let mut queue = sent_at.lock().unwrap_or_else(|e| e.into_inner());
            for _ in 0..whole {
                if let Some(sent) = queue.pop_front() {
                    if sent >= measure_from {
                        tally.answered(now - sent);
                    }
                }
            }
            drop(queue);
            permits.add_permits(whole);
        }
    }
    permits.close();
    writer_task.abort();
    Ok(tally)
}
