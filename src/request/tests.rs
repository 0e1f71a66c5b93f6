//! Request bodies: buffering, the budget, and clients that stall or trickle.

use super::*;

const SILENCE: Duration = Duration::from_secs(5);

fn intake(budget: &Budget, must_hold: bool) -> Intake<'_> {
    Intake {
        limit: 16,
        budget,
        silence: SILENCE,
        must_hold,
    }
}

async fn read(body: &'static str, len: Option<u64>, budget: &Budget, hold: bool) -> ReqBody {
    ReqBody::read(Body::from(body), len, intake(budget, hold))
        .await
        .unwrap()
        .0
}

#[tokio::test]
async fn small_bodies_are_kept_large_ones_stream() {
    let budget = Budget::new(1 << 20);
    let mut b = read("hello", Some(5), &budget, false).await;
    assert!(b.replayable());
    for _ in 0..2 {
        let bytes = axum::body::to_bytes(b.take(), 100).await.unwrap();
        assert_eq!(&bytes[..], b"hello");
    }
    let mut b = read("0123456789abcdefXYZ", None, &budget, false).await;
    assert!(!b.replayable());
    let bytes = axum::body::to_bytes(b.take(), 100).await.unwrap();
    assert_eq!(&bytes[..], b"0123456789abcdefXYZ");
    assert!(axum::body::to_bytes(b.take(), 100)
        .await
        .unwrap()
        .is_empty());
    let b = read("0123456789abcdefXYZ", Some(19), &budget, false).await;
    assert!(matches!(b, ReqBody::Streaming(_)));
}

#[tokio::test]
async fn the_budget_is_shared_and_given_back() {
    let budget = Budget::new(20);
    let (b, permit) = ReqBody::read(Body::from("0123456789"), Some(10), intake(&budget, true))
        .await
        .unwrap();
    assert!(b.replayable() && permit.is_some());
    // No room for 11 more: streamed while awake (holding what it read until sent)...
    let mut s = read("abcdefghijk", Some(11), &budget, false).await;
    assert!(!s.replayable());
    assert_eq!(
        &axum::body::to_bytes(s.take(), 100).await.unwrap()[..],
        b"abcdefghijk"
    );
    // ...refused while asleep. A body of unknown size costs its buffer (16, the limit here).
    let full = ReqBody::read(Body::from("abcdefg"), None, intake(&budget, true)).await;
    assert!(matches!(full, Err(ReadError::OverBudget)));
    drop(permit);
    assert!(read("abcdefg", None, &budget, true).await.replayable());
    assert_eq!(Budget::new(256 << 20).describe(), "256MiB");
    assert_eq!(Budget::new(1000).describe(), "1000");
}

#[tokio::test]
async fn tiny_chunks_cost_their_buffer_not_more() {
    let budget = Budget::new(1 << 20);
    let chunks = (0..5000).map(|_| Ok::<_, std::io::Error>(Bytes::from_static(b"x")));
    let body = Body::from_stream(futures_util::stream::iter(chunks));
    let mut wide = intake(&budget, true);
    wide.limit = 1 << 20;
    let (b, permit) = ReqBody::read(body, None, wide).await.unwrap();
    let ReqBody::Buffered(bytes) = &b else {
        panic!("not buffered")
    };
    assert_eq!(bytes.len(), 5000);
    // One 8 KiB buffer charged, whatever the number of chunks.
    assert_eq!(permit.map(|p| p.num_permits()), Some(8 << 10));
}

#[tokio::test(start_paused = true)]
async fn a_body_that_trickles_is_cut_off() {
    let budget = Budget::new(1 << 20);
    let (tx, body) = crate::outbound::channel_body(4);
    // One byte every SILENCE - 1 s: never silent for long, but far below the floor.
    let feeder = tokio::spawn(async move {
        for _ in 0..1000 {
            if tx.send(Ok(Bytes::from_static(b"x"))).await.is_err() {
                return;
            }
            tokio::time::sleep(SILENCE - Duration::from_secs(1)).await;
        }
    });
    let started = tokio::time::Instant::now();
    let mut wide = intake(&budget, false);
    wide.limit = 1 << 20;
    let read = ReqBody::read(body, Some(1000), wide).await;
    assert!(matches!(read, Err(ReadError::Stalled(_))));
    assert!(started.elapsed() < SILENCE * 3, "{:?}", started.elapsed());
    feeder.abort();
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_sending_is_cut_off() {
    let budget = Budget::new(1 << 20);
    let (tx, body) = crate::outbound::channel_body(4);
    tx.send(Ok(Bytes::from_static(b"{"))).await.unwrap();
    // Ten bytes declared, one sent, then nothing (the sender stays open).
    let read = ReqBody::read(body, Some(10), intake(&budget, false)).await;
    assert!(matches!(read, Err(ReadError::Stalled(SILENCE))));
    drop(tx);
}

#[tokio::test]
async fn a_declared_size_alone_allocates_nothing() {
    let budget = Budget::new(64 << 20);
    let mut wide = intake(&budget, true);
    wide.limit = 32 << 20;
    // 16 MiB declared, one byte sent: the buffer (and the charge) is the first one, not 16 MiB.
    let (_, permit) = ReqBody::read(Body::from("x"), Some(16 << 20), wide)
        .await
        .unwrap();
    assert_eq!(permit.map(|p| p.num_permits()), Some(8 << 10));
}
