//! A capture of the TCP segments sent on loopback to one port (an `AF_PACKET` socket: root only):
//! the order requests were sent to Ollama in, whatever order Ollama's server then reads them in.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The `x-seq` header values seen in segments to one port, in the order they were sent.
pub struct Tap {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<String>>>,
}

impl Tap {
    /// Starts capturing, or says why it cannot (then the caller skips), unless
    /// `OLLAMA_PROXY_REQUIRE_NETNS=1` (CI, as root) demands it, in which case it panics.
    pub fn start(port: u16) -> Option<Tap> {
        match open(port) {
            Ok(fd) => {
                let stop = Arc::new(AtomicBool::new(false));
                let flag = Arc::clone(&stop);
                let thread = std::thread::spawn(move || capture(fd, port, &flag));
                Some(Tap {
                    stop,
                    thread: Some(thread),
                })
            }
            Err(why) => {
                if std::env::var("OLLAMA_PROXY_REQUIRE_NETNS").as_deref() == Ok("1") {
                    panic!("a loopback capture is required but cannot be made: {why}");
                }
                eprintln!("SKIPPED: cannot capture on loopback here ({why})");
                None
            }
        }
    }

    /// Stops and returns what was seen.
    pub fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .map(|t| t.join().unwrap())
            .unwrap_or_default()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// An `AF_PACKET` socket on `lo` for IPv4 TCP segments to `port` (a kernel filter drops the rest
/// of the machine's loopback traffic), with a large buffer and a short read timeout.
fn open(port: u16) -> Result<std::os::fd::OwnedFd, String> {
    use std::os::fd::FromRawFd;
    let proto = (libc::ETH_P_IP as u16).to_be();
    // SAFETY: plain socket(2); the descriptor is owned below.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(proto)) };
    if raw < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a new descriptor that nothing else owns.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
    filter(raw, port)?;
    // As root the buffer may exceed rmem_max.
    let _ = set_option(raw, libc::SO_RCVBUFFORCE, &((16 << 20) as libc::c_int));
    let sock = socket2::SockRef::from(&fd);
    sock.set_read_timeout(Some(std::time::Duration::from_millis(50)))
        .map_err(|e| e.to_string())?;
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    // SAFETY: all zeroes is a valid sockaddr_ll; the fields that matter are set.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = index as i32;
    // SAFETY: `addr` is a sockaddr_ll of the size given.
    let bound = unsafe {
        libc::bind(
            raw,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if bound < 0 {
        return Err(format!("bind: {}", std::io::Error::last_os_error()));
    }
    Ok(fd)
}

/// Keeps only IPv4 TCP segments to `port` (classic BPF over the IP header: protocol 6, then the
/// destination port after the header's own length).
fn filter(raw: libc::c_int, port: u16) -> Result<(), String> {
    let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let mut program = [
        op(0x30, 0, 0, 9),               // ldb [9]: the protocol
        op(0x15, 0, 4, 6),               // jeq #6 (TCP), else drop
        op(0xb1, 0, 0, 0),               // ldxb 4*([0]&0xf): the IP header's length
        op(0x48, 0, 0, 2),               // ldh [x+2]: the destination port
        op(0x15, 0, 1, u32::from(port)), // jeq #port, else drop
        op(0x06, 0, 0, 0xffff),          // keep
        op(0x06, 0, 0, 0),               // drop
    ];
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // `prog` points at `program`, which outlives the call; the kernel copies it.
    set_option(raw, libc::SO_ATTACH_FILTER, &prog).map_err(|e| format!("filter: {e}"))
}

/// A `SOL_SOCKET` option whose value is `value`, as it is in memory.
fn set_option<T>(raw: libc::c_int, name: libc::c_int, value: &T) -> std::io::Result<()> {
    // SAFETY: `value` is valid for its size for the length of the call.
    let set = unsafe {
        libc::setsockopt(
            raw,
            libc::SOL_SOCKET,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as u32,
        )
    };
    if set < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Reads segments until `stop` (bounded: a read waits at most 50 ms), keeping the first sighting
/// of each `x-seq` in a segment to `port` (a socket bound to one protocol sees each loopback
/// segment once, as the kernel delivers it, in the sender's write).
fn capture(fd: std::os::fd::OwnedFd, port: u16, stop: &AtomicBool) -> Vec<String> {
    use std::os::fd::AsRawFd;
    let mut seen: Vec<String> = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut draining = false;
    loop {
        // After `stop`, what is still queued is read without waiting, to its end.
        let flags = if draining { libc::MSG_DONTWAIT } else { 0 };
        // SAFETY: all zeroes is a valid sockaddr_ll.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        // SAFETY: `buf` and `from` are valid for the sizes given.
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                flags,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        let Ok(n) = usize::try_from(n) else {
            if draining {
                break;
            }
            draining = stop.load(Ordering::SeqCst);
            continue;
        };
        if let Some(seq) = seq_to(&buf[..n], port) {
            if !seen.contains(&seq) {
                seen.push(seq);
            }
        }
    }
    seen
}

/// The `x-seq` value of an IPv4 TCP segment to `port`, if it carries one.
fn seq_to(packet: &[u8], port: u16) -> Option<String> {
    let ihl = usize::from(packet.first()? & 0x0f) * 4;
    if *packet.get(9)? != 6 {
        return None;
    }
    let tcp = packet.get(ihl..)?;
    if u16::from_be_bytes([*tcp.get(2)?, *tcp.get(3)?]) != port {
        return None;
    }
    let payload = tcp.get(usize::from(tcp.get(12)? >> 4) * 4..)?;
    let at = payload.windows(7).position(|w| w == b"x-seq: ")? + 7;
    let value = payload.get(at..)?;
    let end = value.iter().position(|b| !b.is_ascii_digit())?;
    Some(String::from_utf8_lossy(&value[..end]).into_owned())
}
