//! End-to-end tests of `bulkhead vm run` with the project's test guest (guest/, built here
//! with gcc). Each test boots the guest through one loader path, lets it drive the devices,
//! and checks what it reports on the serial console against what the host side observed.

mod vm_common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use vm_common::{
    assert_vsock_exchange, fnv1a, guest, pattern, run, serve_port_5000, shutdown_report, spawn,
    TempDir,
};

const T: Duration = Duration::from_secs(60);
const SECTOR: usize = 512;

/// A 1 MiB raw disk whose sector 0 starts with a marker and whose sector 2 is random.
fn make_disk(path: &std::path::Path, marker: &str) -> Vec<u8> {
    let mut data = pattern(1 << 20, 0xd15c);
    data[..marker.len()].copy_from_slice(marker.as_bytes());
    data[marker.len()] = 0;
    std::fs::write(path, &data).unwrap();
    data
}

fn serial_hex(line: &str) -> Vec<u8> {
    let hex = line.rsplit(' ').next().unwrap();
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

#[test]
fn elf_guest_drives_blk_rng_vsock_and_reports_boot_info() {
    let g = guest();
    let dir = TempDir::new("vm-elf");
    let rw = dir.path("rw.img");
    let ro = dir.path("ro.img");
    let rw_before = make_disk(&rw, "BULKHEAD-DISK-RW");
    let ro_before = make_disk(&ro, "BULKHEAD-DISK-RO");
    let initrd = dir.path("initrd.img");
    let initrd_data = pattern(300_000, 0x1417d);
    std::fs::write(&initrd, &initrd_data).unwrap();
    let uds = dir.path("vsock.sock");

    // Guest-initiated connections to port 5000 land on <uds>_5000.
    let host_side = serve_port_5000(&uds);

    let uds_arg = format!("3,uds={}", uds.display());
    let mut vm = spawn(&[
        "vm",
        "run",
        "--kernel",
        g.elf.to_str().unwrap(),
        "--cpus",
        "2",
        "--memory",
        "96",
        "--initrd",
        initrd.to_str().unwrap(),
        "--disk",
        rw.to_str().unwrap(),
        "--disk",
        &format!("{},ro", ro.display()),
        "--rng",
        "--vsock",
        &uds_arg,
    ]);

    // Host-initiated connection: once the guest listens, connect through the Unix socket.
    vm.wait_for("vsock: listening on port 1234", T)
        .expect("guest never reached the vsock listen step");
    let mut s = UnixStream::connect(&uds).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(b"CONNECT 1234\n").unwrap();
    let mut ok = [0u8; 32];
    let n = s.read(&mut ok).unwrap();
    let ok = String::from_utf8_lossy(&ok[..n]).to_string();
    assert!(
        ok.starts_with("OK ") && ok.ends_with('\n'),
        "CONNECT answer {ok:?}"
    );
    s.write_all(b"ping from the host test").unwrap();
    let mut echo = [0u8; 64];
    let n = s.read(&mut echo).unwrap();
    assert_eq!(&echo[..n], b"PING FROM THE HOST TEST");
    drop(s);

    let out = vm.finish(T);
    assert!(out.status.success(), "{out}");
    let guest_sent = host_side.join().unwrap();
    assert_eq!(guest_sent, "hello from the guest over vsock\n");

    // Boot information.
    assert!(out
        .line("bulkhead test guest: entered via linux64")
        .contains("info at 0x7000"));
    let mib: u64 = out
        .line("e820:")
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (94..=96).contains(&mib),
        "e820 shows {mib} MiB for a 96 MiB guest\n{out}"
    );
    assert_eq!(out.line("mptable:"), "mptable: 2 cpus");
    let initrd_line = out.line("initrd:");
    assert!(
        initrd_line.starts_with(&format!("initrd: {} bytes", initrd_data.len())),
        "{out}"
    );
    assert!(
        initrd_line.ends_with(&format!("fnv1a {:#x}", fnv1a(&initrd_data))),
        "{out}"
    );
    assert!(shutdown_report(&out).contains("(i8042 reset)"), "{out}");

    // virtio-blk, read-write disk: guest read our marker, its write is in the file.
    assert_eq!(
        out.line("blk0: capacity"),
        "blk0: capacity 2048 sectors ro=0"
    );
    assert_eq!(out.line("blk0: id"), "blk0: id bulkhead-virtio-blk0");
    assert!(
        out.line("blk0: read sector 0")
            .ends_with("used 513 data 'BULKHEAD-DISK-RW'"),
        "{out}"
    );
    assert_eq!(
        out.line("blk0: write sector 2"),
        "blk0: write sector 2 status 0"
    );
    assert_eq!(out.line("blk0: flush"), "blk0: flush status 0");
    assert_eq!(out.line("blk0: readback"), "blk0: readback ok");
    assert_eq!(
        out.line("blk0: out-of-range"),
        "blk0: out-of-range read status 1"
    );
    assert_eq!(
        out.line("blk0: bad-address"),
        "blk0: bad-address request used 0 status 0xff"
    );
    assert_eq!(
        out.line("blk0: after bad request"),
        "blk0: after bad request read status 0 data 'BULKHEAD-DISK-RW'"
    );
    let rw_after = std::fs::read(&rw).unwrap();
    let msg = b"written by the bulkhead test guest to sector 2";
    assert_eq!(&rw_after[2 * SECTOR..2 * SECTOR + msg.len()], msg);
    assert_eq!(rw_after[2 * SECTOR + 508], 0, "disk index byte");
    assert_eq!(
        &rw_after[..2 * SECTOR],
        &rw_before[..2 * SECTOR],
        "other sectors untouched"
    );
    assert_eq!(
        &rw_after[3 * SECTOR..],
        &rw_before[3 * SECTOR..],
        "other sectors untouched"
    );

    // virtio-blk, read-only disk: reads work, the write is refused, the file is unchanged.
    assert_eq!(
        out.line("blk1: capacity"),
        "blk1: capacity 2048 sectors ro=1"
    );
    assert!(
        out.line("blk1: read sector 0")
            .ends_with("data 'BULKHEAD-DISK-RO'"),
        "{out}"
    );
    assert_eq!(
        out.line("blk1: write sector 2"),
        "blk1: write sector 2 status 1"
    );
    assert_eq!(std::fs::read(&ro).unwrap(), ro_before);

    // virtio-rng: two 32-byte answers, not all zero, not equal.
    let rng: Vec<Vec<u8>> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("rng: 32 bytes "))
        .map(serial_hex)
        .collect();
    assert_eq!(rng.len(), 2, "{out}");
    assert!(
        rng.iter()
            .all(|r| r.len() == 32 && r.iter().any(|b| *b != 0)),
        "{out}"
    );
    assert_ne!(rng[0], rng[1]);

    // virtio-vsock, both directions.
    assert_eq!(out.line("vsock: guest cid"), "vsock: guest cid 3");
    assert_eq!(
        out.line("vsock: connected"),
        "vsock: connected to host port 5000"
    );
    assert_vsock_exchange(&out);
    assert!(out.stdout.contains("guest: done, shutting down via i8042"));

    // The socket file is gone once the VM has ended (removed by the jail's supervisor).
    assert!(!uds.exists(), "vsock socket left behind");
}

#[test]
fn bzimage_guest_boots_through_the_linux_boot_protocol() {
    let g = guest();
    let out = run(
        &[
            "vm",
            "run",
            "--kernel",
            g.bzimage.to_str().unwrap(),
            "--cmdline",
            "console=ttyS0 bulkhead_test.marker=bz42",
            "--memory",
            "64",
        ],
        T,
    );
    assert!(out.status.success(), "{out}");
    assert!(out
        .line("bulkhead test guest: entered via linux64")
        .contains("0x7000"));
    // On a KVM that emulates guest kernel code the VMM appends its kernel parameters.
    let line = out.line("cmdline:");
    let added = line
        .strip_prefix("cmdline: console=ttyS0 bulkhead_test.marker=bz42")
        .unwrap_or_else(|| panic!("{line}"));
    assert!(
        added.is_empty() || added.ends_with(" pvm.syscall_fixup=1"),
        "{line}"
    );
    let mib: u64 = out
        .line("e820:")
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!((62..=64).contains(&mib), "{out}");
    assert_eq!(out.line("mptable:"), "mptable: 1 cpus");
    shutdown_report(&out);
}

#[test]
fn pvh_entry_gets_start_info_memory_map_and_initrd_module() {
    let g = guest();
    let dir = TempDir::new("vm-pvh");
    let initrd = dir.path("initrd");
    let data = pattern(12_345, 0x9a7);
    std::fs::write(&initrd, &data).unwrap();
    let out = run(
        &[
            "vm",
            "run",
            "--kernel",
            g.elf.to_str().unwrap(),
            "--boot-protocol",
            "pvh",
            "--initrd",
            initrd.to_str().unwrap(),
            "--cpus",
            "3",
        ],
        T,
    );
    assert!(out.status.success(), "{out}");
    assert!(out
        .line("bulkhead test guest: entered via pvh")
        .contains("info at 0x6000"));
    assert_eq!(out.line("mptable:"), "mptable: 3 cpus");
    let mib: u64 = out
        .line("e820:")
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!((126..=128).contains(&mib), "{out}");
    assert!(
        out.line("initrd:")
            .ends_with(&format!("fnv1a {:#x}", fnv1a(&data))),
        "{out}"
    );
}

#[test]
fn json_config_and_console_file() {
    let g = guest();
    let dir = TempDir::new("vm-json");
    let disk = dir.path("disk.img");
    make_disk(&disk, "BULKHEAD-JSON");
    let console = dir.path("console.log");
    let config = dir.path("vm.json");
    let json = serde_json::json!({
        "kernel": g.elf,
        "cmdline": "console=ttyS0 from=json",
        "cpus": 2,
        "memory_mib": 48,
        "disks": [{"path": disk, "read_only": true}],
        "rng": true,
        "console": console,
    });
    std::fs::write(&config, json.to_string()).unwrap();
    let out = run(&["vm", "run", "--config", config.to_str().unwrap()], T);
    assert!(out.status.success(), "{out}");
    assert!(
        out.stdout.trim().is_empty(),
        "serial output went to stdout\n{out}"
    );
    let serial = std::fs::read_to_string(&console).unwrap();
    // The VMM's own parameters (device list, host parameters) follow the configured ones.
    let cmdline = serial
        .lines()
        .find(|l| l.starts_with("cmdline: console=ttyS0 from=json "))
        .unwrap_or_else(|| panic!("{serial}"));
    assert!(
        cmdline.ends_with(" virtio_mmio.device=4K@0xd0001000:5 virtio_mmio.device=4K@0xd0002000:6"),
        "{cmdline}"
    );
    assert!(serial.contains("mptable: 2 cpus"), "{serial}");
    assert!(
        serial.contains("blk0: capacity 2048 sectors ro=1"),
        "{serial}"
    );
    assert!(serial.contains("blk0: write sector 2 status 1"), "{serial}");
    assert!(serial.contains("rng: 32 bytes"), "{serial}");

    // Flags override the file.
    let out = run(
        &[
            "vm",
            "run",
            "--config",
            config.to_str().unwrap(),
            "--cpus",
            "1",
            "--console",
            dir.path("c2.log").to_str().unwrap(),
        ],
        T,
    );
    assert!(out.status.success(), "{out}");
    let serial = std::fs::read_to_string(dir.path("c2.log")).unwrap();
    assert!(serial.contains("mptable: 1 cpus"), "{serial}");
}

/// virtio-net over a tap in a private network namespace (so the test touches no host
/// interface): the guest sends a frame the test reads from the tap with a packet socket,
/// and receives the test's answer.
#[test]
fn net_device_exchanges_frames_with_a_tap() {
    let g = guest();
    let elf = g.elf.clone();
    // Network namespaces are per thread: everything, including the spawned VMM, runs here.
    let handle = std::thread::spawn(move || {
        // SAFETY: unshare(CLONE_NEWNET) only changes this thread's network namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        let tap = "bhtap0";
        for args in [
            vec!["tuntap", "add", "dev", tap, "mode", "tap"],
            vec!["link", "set", tap, "up"],
        ] {
            let st = std::process::Command::new("ip")
                .args(&args)
                .status()
                .expect("ip");
            assert!(st.success(), "ip {args:?}");
        }
        let sock = PacketSocket::open(tap);
        let mut vm = spawn(&[
            "vm",
            "run",
            "--kernel",
            elf.to_str().unwrap(),
            "--net",
            &format!("tap={tap}"),
        ]);
        let frame = sock
            .recv_ours(Duration::from_secs(30))
            .expect("no frame from the guest");
        vm.wait_for("net: sent a frame", T);
        // Reply to the sender's MAC.
        let mut reply = Vec::new();
        reply.extend_from_slice(&frame[6..12]);
        reply.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
        reply.extend_from_slice(&[0x88, 0xb5]);
        let mut payload = b"bulkhead-net-pong from the host test".to_vec();
        payload.resize(46, 0);
        reply.extend_from_slice(&payload);
        sock.send(&reply);
        (frame, vm.finish(T))
    });
    let (frame, out) = handle.join().unwrap();
    assert!(out.status.success(), "{out}");
    assert_eq!(out.line("net: mac"), "net: mac 02b10c000001");
    assert_eq!(&frame[..6], &[0xff; 6]);
    assert_eq!(&frame[6..12], &[0x02, 0xb1, 0x0c, 0, 0, 1]);
    assert!(frame[14..].starts_with(b"bulkhead-net-ping from the guest"));
    assert_eq!(
        out.line("net: received"),
        "net: received 'bulkhead-net-pong from the host test'"
    );
}

/// A raw AF_PACKET socket bound to one interface and the test ethertype 0x88b5.
struct PacketSocket {
    fd: i32,
    ifindex: i32,
}

impl PacketSocket {
    fn open(ifname: &str) -> PacketSocket {
        let proto = (0x88b5u16).to_be() as i32;
        // SAFETY: plain socket(2) call; the fd is owned by the returned struct.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        let name = std::ffi::CString::new(ifname).unwrap();
        // SAFETY: `name` is a valid NUL-terminated string for the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        assert!(ifindex > 0, "no interface {ifname}");
        // SAFETY: an all-zero sockaddr_ll is valid; the fields set below make it a bind address.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto as u16;
        sll.sll_ifindex = ifindex;
        // SAFETY: `sll` is a sockaddr_ll of the size passed.
        let rc = unsafe {
            libc::bind(
                fd,
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "bind AF_PACKET: {}", std::io::Error::last_os_error());
        PacketSocket { fd, ifindex }
    }

    fn recv_ours(&self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = std::time::Instant::now() + timeout;
        let mut buf = vec![0u8; 2048];
        while std::time::Instant::now() < deadline {
            let mut pfd = libc::pollfd {
                fd: self.fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut pfd, 1, 200) } <= 0 {
                continue;
            }
            // SAFETY: `buf` is valid for writes of its length.
            let n = unsafe { libc::recv(self.fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 14 && buf[12] == 0x88 && buf[13] == 0xb5 {
                return Some(buf[..n as usize].to_vec());
            }
        }
        None
    }

    fn send(&self, frame: &[u8]) {
        // SAFETY: see `open`; the destination is this interface.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: `frame` and `sll` are valid for the lengths passed.
        let n = unsafe {
            libc::sendto(
                self.fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(
            n,
            frame.len() as isize,
            "sendto: {}",
            std::io::Error::last_os_error()
        );
    }
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: the fd is owned by this struct and closed once.
        unsafe { libc::close(self.fd) };
    }
}
