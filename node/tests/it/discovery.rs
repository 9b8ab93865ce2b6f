//! mDNS discovery: two nodes of one hall find each other through real multicast on the loopback interface (nothing
//! leaves the machine), while a node of another hall and malformed announcements are never hinted; and the TXT
//! parsing refuses what a LAN may send.

use mdns_sd::{ServiceDaemon, ServiceInfo};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use zhaowo_node::discovery::{
    ADDRESSES_PER_NODE_MAX, AnnouncementRefused, Discovery, DiscoveryInterfaces, DiscoveryOptions, SERVICE_TYPE,
    TXT_VERSION, announced_node_key, dial_addresses,
};

const HALL: [u8; 32] = [0x4a; 32];
const OTHER_HALL: [u8; 32] = [0x4b; 32];
const KEY_A: [u8; 32] = [0xa1; 32];
const KEY_B: [u8; 32] = [0xb2; 32];
const KEY_OTHER_HALL: [u8; 32] = [0xc3; 32];
/// Long enough for probing (~0.75 s) and a couple of query retransmissions; a working loopback finds both in ~2 s.
const DISCOVERY_WAIT_MS: u64 = 10_000;

use zhaowo_node::home::hex;

/// A UDP port nobody on this machine uses for mDNS, so the test never talks to a responder of the host and
/// parallel test runs do not hear each other.
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn loopback_options(hall: [u8; 32], key: [u8; 32], port: u16, mdns_port: u16) -> DiscoveryOptions {
    let mut options = DiscoveryOptions::recommended(hall, key, port);
    options.mdns_port = mdns_port;
    options.interfaces = DiscoveryInterfaces::Loopback;
    options.rehint_interval_ms = 500;
    options.browse_interval_ms = 2_000;
    options
}

/// Starts a node whose hints land in `hints` tagged with `name`.
fn start(
    name: &'static str,
    options: DiscoveryOptions,
    hints: &mpsc::Sender<(&'static str, [u8; 32], SocketAddr)>,
) -> Discovery {
    let hints = hints.clone();
    Discovery::start(options, move |key, addr| {
        let _ = hints.send((name, key, addr));
    })
    .unwrap()
}

/// Whether IPv4 multicast sent out of the loopback interface comes back to a member socket: without that, mDNS
/// on loopback cannot work here, and the discovery test has nothing to check.
fn loopback_multicast_works() -> bool {
    use socket2::{Domain, Protocol, Socket, Type};
    let group = Ipv4Addr::new(224, 0, 0, 251);
    let probe = || -> std::io::Result<bool> {
        let receiver = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        receiver.set_reuse_address(true)?;
        receiver.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)).into())?;
        receiver.join_multicast_v4(&group, &Ipv4Addr::LOCALHOST)?;
        let port = receiver.local_addr()?.as_socket().map_or(0, |addr| addr.port());
        let receiver: UdpSocket = receiver.into();
        receiver.set_read_timeout(Some(Duration::from_secs(1)))?;
        let sender = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        sender.set_multicast_if_v4(&Ipv4Addr::LOCALHOST)?;
        sender.set_multicast_loop_v4(true)?;
        sender.send_to(b"zhaowo-probe", &SocketAddr::from((group, port)).into())?;
        let mut buffer = [0u8; 64];
        let (n, _) = receiver.recv_from(&mut buffer)?;
        Ok(&buffer[..n] == b"zhaowo-probe")
    };
    probe().unwrap_or(false)
}

/// Announces a raw service under our service type with the given TXT properties, as anything on a LAN could.
fn announce_raw(daemon: &ServiceDaemon, instance: &str, port: u16, properties: &[(&str, &str)]) {
    let mut service = ServiceInfo::new(SERVICE_TYPE, instance, &format!("{instance}.local."), "", port, properties)
        .unwrap()
        .enable_addr_auto();
    service.set_interfaces(vec![mdns_sd::IfKind::LoopbackV4]);
    daemon.register(service).unwrap();
}

#[test]
fn two_nodes_of_one_hall_discover_each_other_and_ignore_the_rest() {
    let mdns_port = free_udp_port();
    let (hints, hinted) = mpsc::channel();
    let a = start("a", loopback_options(HALL, KEY_A, 40_001, mdns_port), &hints);
    let b = start("b", loopback_options(HALL, KEY_B, 40_002, mdns_port), &hints);
    // A node of another hall on the same LAN: both sides must ignore it, and it must ignore them.
    let other = start("other", loopback_options(OTHER_HALL, KEY_OTHER_HALL, 40_003, mdns_port), &hints);
    // Malformed announcements from the LAN: a node key of the wrong length, a hall prefix that is not hex, and a
    // replay of A's own record under another name (A must not hint itself; B may hint A's key at that address,
    // which the QUIC handshake would then refuse).
    let forger = ServiceDaemon::new_with_port(mdns_port).unwrap();
    forger.disable_interface(mdns_sd::IfKind::All).unwrap();
    forger.enable_interface(mdns_sd::IfKind::LoopbackV4).unwrap();
    let hall_hex = hex(&HALL[..8]);
    announce_raw(
        &forger,
        "forged-short-key",
        40_010,
        &[("txtvers", TXT_VERSION), ("hall", &hall_hex), ("node", &hex(&[0xd4; 31]))],
    );
    announce_raw(
        &forger,
        "forged-bad-hall",
        40_011,
        &[("txtvers", TXT_VERSION), ("hall", "zz4a4a4a4a4a4a4a"), ("node", &hex(&[0xd5; 32]))],
    );
    announce_raw(
        &forger,
        "forged-replay-of-a",
        40_012,
        &[("txtvers", TXT_VERSION), ("hall", &hall_hex), ("node", &hex(&KEY_A))],
    );

    let mut seen: HashMap<&str, HashSet<([u8; 32], SocketAddr)>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_millis(DISCOVERY_WAIT_MS);
    let found = |seen: &HashMap<&str, HashSet<([u8; 32], SocketAddr)>>, name: &str, key: [u8; 32], port: u16| {
        seen.get(name).is_some_and(|hints| hints.iter().any(|(k, addr)| *k == key && addr.port() == port))
    };
    while !(found(&seen, "a", KEY_B, 40_002) && found(&seen, "b", KEY_A, 40_001)) {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else { break };
        match hinted.recv_timeout(left) {
            Ok((name, key, addr)) => {
                seen.entry(name).or_default().insert((key, addr));
            }
            Err(_) => break,
        }
    }
    // Let a few more rounds of rehints and announcements arrive, so a wrong hint has its chance to show up.
    std::thread::sleep(Duration::from_millis(1_500));
    while let Ok((name, key, addr)) = hinted.try_recv() {
        seen.entry(name).or_default().insert((key, addr));
    }

    if !(found(&seen, "a", KEY_B, 40_002) && found(&seen, "b", KEY_A, 40_001)) {
        if !loopback_multicast_works() {
            eprintln!("discovery: no multicast interface, skipped");
            return;
        }
        panic!(
            "loopback multicast works, yet the nodes did not discover each other within {DISCOVERY_WAIT_MS} ms: {seen:?}"
        );
    }

    let a_hints = &seen["a"];
    let b_hints = &seen["b"];
    // A hears B only (never itself, never the other hall, never a forged record), at B's port on loopback.
    assert!(a_hints.iter().all(|(key, addr)| *key == KEY_B && addr.port() == 40_002), "{a_hints:?}");
    assert!(a_hints.iter().all(|(_, addr)| addr.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST)), "{a_hints:?}");
    // B hears A, and A's key at the replayed record's port (a forged address hint; the handshake refuses it).
    assert!(
        b_hints.iter().all(|(key, addr)| *key == KEY_A && (addr.port() == 40_001 || addr.port() == 40_012)),
        "{b_hints:?}"
    );
    // The other hall's node heard announcements of our hall and the forgeries, and hinted none of them.
    assert!(!seen.contains_key("other"), "{seen:?}");

    let shutdown_started = Instant::now();
    a.shutdown();
    b.shutdown();
    drop(other);
    let _ = forger.shutdown();
    assert!(shutdown_started.elapsed() < Duration::from_secs(8), "shutdown took {:?}", shutdown_started.elapsed());
}

#[test]
fn txt_records_of_other_halls_ourselves_and_malformed_ones_are_refused() {
    let our_key = KEY_A;
    let hall_hex = hex(&HALL[..8]);
    let b_hex = hex(&KEY_B);
    let check = |version: Option<&str>, hall: Option<&str>, node: Option<&str>| {
        announced_node_key(
            version.map(str::as_bytes),
            hall.map(str::as_bytes),
            node.map(str::as_bytes),
            &HALL,
            &our_key,
        )
    };
    let v = Some(TXT_VERSION);

    assert_eq!(check(v, Some(&hall_hex), Some(&b_hex)), Ok(KEY_B));
    // Hex of either case is accepted (a hand-written announcer might shout).
    assert_eq!(check(v, Some(&hall_hex.to_uppercase()), Some(&b_hex.to_uppercase())), Ok(KEY_B));

    assert_eq!(check(None, Some(&hall_hex), Some(&b_hex)), Err(AnnouncementRefused::Version));
    assert_eq!(check(Some("2"), Some(&hall_hex), Some(&b_hex)), Err(AnnouncementRefused::Version));

    assert_eq!(check(v, None, Some(&b_hex)), Err(AnnouncementRefused::MalformedHall));
    assert_eq!(check(v, Some(&hall_hex[..15]), Some(&b_hex)), Err(AnnouncementRefused::MalformedHall));
    assert_eq!(check(v, Some(&format!("{hall_hex}0")), Some(&b_hex)), Err(AnnouncementRefused::MalformedHall));
    assert_eq!(check(v, Some(&hex(&HALL)), Some(&b_hex)), Err(AnnouncementRefused::MalformedHall));
    assert_eq!(check(v, Some("4a4a4a4a4a4a4a4g"), Some(&b_hex)), Err(AnnouncementRefused::MalformedHall));
    assert_eq!(check(v, Some("+a4a4a4a4a4a4a4a"), Some(&b_hex)), Err(AnnouncementRefused::MalformedHall));
    assert_eq!(check(v, Some("4a4a4a4a4a4a4a4ä"), Some(&b_hex)), Err(AnnouncementRefused::MalformedHall));

    assert_eq!(check(v, Some(&hex(&OTHER_HALL[..8])), Some(&b_hex)), Err(AnnouncementRefused::OtherHall));

    assert_eq!(check(v, Some(&hall_hex), None), Err(AnnouncementRefused::MalformedNode));
    assert_eq!(check(v, Some(&hall_hex), Some("")), Err(AnnouncementRefused::MalformedNode));
    assert_eq!(check(v, Some(&hall_hex), Some(&b_hex[..63])), Err(AnnouncementRefused::MalformedNode));
    assert_eq!(check(v, Some(&hall_hex), Some(&format!("{b_hex}b"))), Err(AnnouncementRefused::MalformedNode));
    assert_eq!(
        check(v, Some(&hall_hex), Some(&format!("{}xx", &b_hex[..62]))),
        Err(AnnouncementRefused::MalformedNode)
    );
    assert_eq!(check(v, Some(&hall_hex), Some(&"b2".repeat(1000))), Err(AnnouncementRefused::MalformedNode));

    assert_eq!(check(v, Some(&hall_hex), Some(&hex(&our_key))), Err(AnnouncementRefused::Ourselves));

    // Raw bytes that are not UTF-8 at all are refused too (TXT values are bytes on the wire).
    assert_eq!(
        announced_node_key(v.map(str::as_bytes), Some(&[0xff; 16]), Some(b_hex.as_bytes()), &HALL, &our_key),
        Err(AnnouncementRefused::MalformedHall)
    );
}

#[test]
fn announced_addresses_are_ordered_ipv4_first_scoped_and_capped() {
    let link_local: Ipv6Addr = "fe80::1".parse().unwrap();
    let global: Ipv6Addr = "fd00::2".parse().unwrap();
    let ips = vec![
        (IpAddr::V6(link_local), 3),
        (IpAddr::V6(global), 3),
        (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), 2),
        (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 2),
        (IpAddr::V4(Ipv4Addr::new(224, 0, 0, 251)), 2),
    ];
    let addresses = dial_addresses(ips, 4433);
    assert_eq!(
        addresses,
        vec![
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 7), 4433)),
            SocketAddr::new(IpAddr::V6(global), 4433),
            SocketAddr::V6(std::net::SocketAddrV6::new(link_local, 4433, 0, 3)),
        ]
    );

    // A record with hundreds of addresses turns into a bounded number of hints.
    let flood = (0..1_000u32).map(|i| (IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), 0));
    assert_eq!(dial_addresses(flood, 4433).len(), ADDRESSES_PER_NODE_MAX);
}
