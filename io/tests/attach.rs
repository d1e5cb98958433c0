//! Attach semantics and control messages (versile-notes.md section 9, items 16-19, 23-27,
//! 29, 35 and 39).

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::{Probe, Pusher, Running};
use weir_io::{
    attach, AttachError, ByteFilter, ControlReply, Credit, DeliverError, Ending, IoControl, Peer,
};

#[test]
fn attaching_the_same_pair_twice_is_a_no_op() {
    let rt = Running::new();
    let p = Pusher::new(&rt.reactor);
    let c = Probe::new(&rt.reactor, Some(10));
    attach(&p.producer(), &c.consumer()).unwrap();
    attach(&p.producer(), &c.consumer()).unwrap();
    rt.settle();
    assert_eq!(p.attached.load(Ordering::SeqCst), 1);
    assert_eq!(c.attached.load(Ordering::SeqCst), 1);
    // Item 25: each side knows the other.
    let link = p.slot.link().expect("attached");
    assert!(Arc::ptr_eq(&link, &c.slot.link().expect("attached")));
    // Item 25: one notification each way, once.
    assert_eq!(
        *p.controls.lock(),
        vec!["NotifyConsumerAttached".to_string()]
    );
    assert_eq!(
        *c.controls.lock(),
        vec!["NotifyProducerAttached".to_string()]
    );
}

#[test]
fn a_second_peer_is_refused_on_either_side() {
    let rt = Running::new();
    let p = Pusher::new(&rt.reactor);
    let c = Probe::new(&rt.reactor, Some(10));
    attach(&p.producer(), &c.consumer()).unwrap();
    let other_c = Probe::new(&rt.reactor, Some(10));
    let other_p = Pusher::new(&rt.reactor);
    assert_eq!(
        attach(&p.producer(), &other_c.consumer()),
        Err(AttachError::ProducerAttached)
    );
    assert_eq!(
        attach(&other_p.producer(), &c.consumer()),
        Err(AttachError::ConsumerAttached)
    );
    let elsewhere = Running::new();
    let far = Probe::new(&elsewhere.reactor, None);
    assert_eq!(
        attach(&other_p.producer(), &far.consumer()),
        Err(AttachError::DifferentReactors)
    );
}

#[test]
fn attach_after_the_end_is_refused() {
    let rt = Running::new();
    let p = Pusher::new(&rt.reactor);
    let c = Probe::new(&rt.reactor, Some(10));
    attach(&p.producer(), &c.consumer()).unwrap();
    p.push(&b"abc"[..]);
    p.finish(Ending::Completed);
    rt.settle();
    assert_eq!(*c.endings.lock(), vec![Ending::Completed]);
    assert!(p.slot.link().is_none() && c.slot.link().is_none());
    let p2 = Pusher::new(&rt.reactor);
    let c2 = Probe::new(&rt.reactor, None);
    assert_eq!(
        attach(&p2.producer(), &c.consumer()),
        Err(AttachError::ConsumerEnded)
    );
    assert_eq!(
        attach(&p.producer(), &c2.consumer()),
        Err(AttachError::ProducerEnded)
    );
}

#[test]
fn counters_reset_when_attached_again_after_detach() {
    let rt = Running::new();
    let p = Pusher::new(&rt.reactor);
    // A window of 10 that is never raised: cumulative credit 10 for each link.
    // A window of 0: the probe grants nothing of its own, the test grants by hand.
    let c = Probe::new(&rt.reactor, Some(0));
    attach(&p.producer(), &c.consumer()).unwrap();
    rt.settle();
    // Paused at attach: credit 0, nothing may go (item 16, limit 0).
    p.push(vec![1u8; 25]);
    rt.settle();
    assert!(c.data.lock().is_empty(), "credit 0 delivers nothing");
    let link = p.slot.link().unwrap();
    c.grant(&link, Credit::upto(10));
    rt.settle();
    assert_eq!(c.data.lock().len(), 10, "credit 10 allows 10 bytes");
    assert_eq!(link.position(), 10);
    // A smaller limit is ignored (item 17).
    link.grant(Credit::upto(4));
    assert_eq!(link.credit(), Credit::upto(10));

    link.detach();
    rt.settle();
    assert_eq!(p.detached.load(Ordering::SeqCst), 1, "item 26: hooks once");
    assert_eq!(c.detached.load(Ordering::SeqCst), 1);
    assert!(p.slot.link().is_none() && c.slot.link().is_none());
    link.detach();
    rt.settle();
    assert_eq!(
        p.detached.load(Ordering::SeqCst),
        1,
        "a second detach does nothing"
    );

    attach(&p.producer(), &c.consumer()).unwrap();
    rt.settle();
    let link2 = p.slot.link().unwrap();
    assert!(!Arc::ptr_eq(&link, &link2), "a new link");
    assert_eq!((link2.position(), link2.credit()), (0, Credit::ZERO));
    c.grant(&link2, Credit::upto(10));
    rt.settle();
    assert_eq!(c.data.lock().len(), 20, "credit 10 allows 10 bytes again");
    assert_eq!(link2.position(), 10);
    assert!(p.refusals.lock().is_empty(), "{:?}", p.refusals.lock());
    assert!(c.violations.lock().is_empty(), "{:?}", c.violations.lock());
}

#[test]
fn the_link_refuses_data_beyond_credit_and_unlimited_is_sticky() {
    let rt = Running::new();
    let p = Pusher::new(&rt.reactor);
    let c = Probe::new(&rt.reactor, None);
    c.pause();
    attach(&p.producer(), &c.consumer()).unwrap();
    rt.settle();
    let link = p.slot.link().unwrap();
    link.grant(Credit::upto(3));
    let l = link.clone();
    let refused = rt.on_reactor(move || l.deliver(bytes::Bytes::from_static(b"four")));
    assert_eq!(refused, Err(DeliverError::NoCredit { remaining: 3 }));
    assert!(
        c.data.lock().is_empty(),
        "nothing of a refused chunk is delivered"
    );
    link.grant(Credit::UNLIMITED);
    link.grant(Credit::upto(5));
    assert!(link.credit().is_unlimited(), "unlimited stays unlimited");
    let l = link.clone();
    assert_eq!(
        rt.on_reactor(move || l.deliver(bytes::Bytes::from_static(b"four"))),
        Ok(())
    );
}

#[test]
fn on_credit_never_runs_inside_consume_and_attach_runs_on_the_reactor_thread() {
    // Items 19 and 27: a consumer that grants from inside consume does not get its producer
    // called back inside the same call stack.
    let rt = Running::new();
    let p = Pusher::new(&rt.reactor);
    let c = Probe::new(&rt.reactor, Some(4));
    let pp = p.clone();
    let c2 = Arc::downgrade(&c);
    *c.on_consume.lock() = Some(Box::new(move |link, _| {
        let before = pp.credits.load(Ordering::SeqCst);
        c2.upgrade().unwrap().grant(link, link.window(8));
        assert_eq!(
            pp.credits.load(Ordering::SeqCst),
            before,
            "grant queues on_credit, never calls it inside"
        );
    }));
    let thread = std::thread::spawn({
        let (p, c) = (p.clone(), c.clone());
        move || attach(&p.producer(), &c.consumer())
    });
    thread.join().unwrap().unwrap();
    p.push(vec![7u8; 100]);
    p.finish(Ending::Completed);
    common::wait_until("the end", || !c.endings.lock().is_empty());
    assert_eq!(c.data.lock().len(), 100);
    assert!(c.violations.lock().is_empty(), "{:?}", c.violations.lock());
}

#[test]
fn unsupported_controls_and_a_filter_passing_controls_both_ways() {
    let rt = Running::new();
    let p = Pusher::new(&rt.reactor);
    let c = Probe::new(&rt.reactor, None);
    let filter = ByteFilter::new(&rt.reactor, 64, |b| b);
    let pair = filter.io_pair();
    attach(&p.producer(), &pair.consumer).unwrap();
    attach(&pair.producer, &c.consumer()).unwrap();
    rt.settle();
    p.controls.lock().clear();
    c.controls.lock().clear();

    let up = p.slot.link().unwrap();
    let down = c.slot.link().unwrap();
    let peer = Peer::Other("test".into());
    // Downstream through the filter, answers come back.
    assert_eq!(
        up.control_downstream(&IoControl::Connected(peer.clone())),
        ControlReply::Handled
    );
    assert_eq!(
        up.control_downstream(&IoControl::CanConnect(peer.clone())),
        ControlReply::Denied
    );
    assert!(!ControlReply::Denied.allows());
    // Upstream through the filter.
    assert_eq!(
        down.control_upstream(&IoControl::ReqProducerState),
        ControlReply::Handled
    );
    // Nobody handles a custom message: Unsupported, which allows (item 35).
    let custom = IoControl::Custom(Arc::new(42u32));
    assert_eq!(up.control_downstream(&custom), ControlReply::Unsupported);
    assert_eq!(down.control_upstream(&custom), ControlReply::Unsupported);
    assert!(ControlReply::Unsupported.allows());
    assert!(!ControlReply::Unsupported.is_supported());
    assert_eq!(
        *c.controls.lock(),
        vec![
            format!("{:?}", IoControl::Connected(peer.clone())),
            format!("{:?}", IoControl::CanConnect(peer)),
            format!("{custom:?}"),
        ]
    );
    assert_eq!(
        *p.controls.lock(),
        vec!["ReqProducerState".to_string(), format!("{custom:?}")]
    );
    // An element with no peer on the far side answers Unsupported.
    let lone = ByteFilter::new(&rt.reactor, 64, |b| b);
    let lone_pair = lone.io_pair();
    let q = Pusher::new(&rt.reactor);
    attach(&q.producer(), &lone_pair.consumer).unwrap();
    rt.settle();
    assert_eq!(
        q.slot
            .link()
            .unwrap()
            .control_downstream(&IoControl::ReqConsumerState),
        ControlReply::Unsupported
    );
}

#[test]
fn repeated_end_and_abort_do_nothing() {
    let rt = Running::new();
    let p = Pusher::new(&rt.reactor);
    let c = Probe::new(&rt.reactor, None);
    attach(&p.producer(), &c.consumer()).unwrap();
    rt.settle();
    let link = p.slot.link().unwrap();
    let l = link.clone();
    rt.on_reactor(move || {
        l.end(Ending::Lost);
        l.end(Ending::Completed);
        l.abort();
        l.detach();
    });
    link.abort();
    rt.settle();
    assert_eq!(
        *c.endings.lock(),
        vec![Ending::Lost],
        "the first ending, once"
    );
    assert_eq!(c.aborts.load(Ordering::SeqCst), 0);
    assert_eq!(p.aborts.load(Ordering::SeqCst), 0);
    assert_eq!(c.detached.load(Ordering::SeqCst), 0);
}
