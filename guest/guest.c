/*
 * bulkhead test guest: a freestanding program that boots through the same loader paths as
 * Linux and exercises the VMM's devices, reporting every result on the serial console.
 *
 *  - serial 16550 at 0x3f8 (output), boot-timer port 0x3f0 (value 123), i8042 reset (0xfe
 *    to port 0x64) to shut down;
 *  - boot information from the zero page (Linux 64-bit protocol) or hvm_start_info (PVH):
 *    command line, e820 / PVH memory map, initrd;
 *  - the MP table (CPU count);
 *  - virtio-mmio devices found on the command line (virtio_mmio.device=4K@BASE:IRQ), driven
 *    by a minimal polling driver: virtio-blk, virtio-rng, virtio-vsock, virtio-net.
 *
 * Two more modes, for snapshot tests, selected with bulkhead_test.mode= on the command line:
 *  - count: prints "count N HASH" lines forever (HASH chains every N, so a line depends on
 *    all before it), after touching bulkhead_test.touch_mib= MiB of memory, until the host
 *    sends 's' on the serial port or Ctrl+Alt+Del through the i8042 ('r' rewrites the touched
 *    memory once and prints the TSC ticks it took); with a virtio-blk disk,
 *    each step also reads a sector into a buffer only the device writes (never the vCPU), and
 *    HASH covers that whole buffer (what a diff snapshot must take from the VMM's own record
 *    of the pages it wrote);
 *  - devices: sets up virtio-blk, -rng and -vsock, queues a disk write without notifying the
 *    device, and waits for a host byte on the serial port ('n': notify, 'w': just wait, as
 *    a restored VMM serves what is queued); then uses rng and vsock.
 *
 * Only general-purpose registers are used (-mgeneral-regs-only): no FPU/SSE, no int3.
 * Addresses are physical = virtual (identity mapping of the first 1 GiB).
 */
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef unsigned long usize;

#define BOOT_MODE_LINUX64 0
#define BOOT_MODE_PVH 1

void *memset(void *d, int c, usize n);
void *memcpy(void *d, const void *s, usize n);
void guest_main(u64 info, u32 mode);

void *memset(void *d, int c, usize n)
{
	u8 *p = d;
	while (n--)
		*p++ = (u8)c;
	return d;
}

void *memcpy(void *d, const void *s, usize n)
{
	u8 *p = d;
	const u8 *q = s;
	while (n--)
		*p++ = *q++;
	return d;
}

static usize strlen(const char *s)
{
	usize n = 0;
	while (s[n])
		n++;
	return n;
}

static int memeq(const void *a, const void *b, usize n)
{
	const u8 *p = a, *q = b;
	while (n--)
		if (*p++ != *q++)
			return 0;
	return 1;
}

/* ---- port and MMIO access ---- */

static inline void outb(u16 port, u8 v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline u8 inb(u16 port)
{
	u8 v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline u32 mmio_r32(u64 addr)
{
	return *(volatile u32 *)addr;
}

static inline void mmio_w32(u64 addr, u32 v)
{
	*(volatile u32 *)addr = v;
}

static inline u8 mmio_r8(u64 addr)
{
	return *(volatile u8 *)addr;
}

/* A full barrier without SSE2's mfence. */
static inline void mb(void)
{
	__asm__ volatile("lock; addl $0, (%%rsp)" : : : "memory", "cc");
}

static inline u64 rdtsc(void)
{
	u32 lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((u64)hi << 32) | lo;
}

static inline void cpu_relax(void)
{
	__asm__ volatile("pause" : : : "memory");
}

/* ---- serial console ---- */

#define COM1 0x3f8

static void putc(char c)
{
	int spins = 100000;
	while (!(inb(COM1 + 5) & 0x20) && spins--)
		;
	outb(COM1, (u8)c);
}

static void puts(const char *s)
{
	while (*s) {
		if (*s == '\n')
			putc('\r');
		putc(*s++);
	}
}

static void put_hex(u64 v)
{
	char buf[19];
	int i = 18;
	buf[i] = 0;
	do {
		buf[--i] = "0123456789abcdef"[v & 15];
		v >>= 4;
	} while (v);
	buf[--i] = 'x';
	buf[--i] = '0';
	puts(&buf[i]);
}

static void put_dec(u64 v)
{
	char buf[21];
	int i = 20;
	buf[i] = 0;
	do {
		buf[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	puts(&buf[i]);
}

static void put_bytes_hex(const u8 *p, usize n)
{
	for (usize i = 0; i < n; i++) {
		putc("0123456789abcdef"[p[i] >> 4]);
		putc("0123456789abcdef"[p[i] & 15]);
	}
}

/* Printable prefix of a buffer, stopping at the first NUL or non-printable byte. */
static void put_text(const u8 *p, usize n)
{
	for (usize i = 0; i < n && p[i] >= 0x20 && p[i] < 0x7f; i++)
		putc((char)p[i]);
}

/* ---- boot information ---- */

static const char *cmdline = "";
static u64 initrd_addr, initrd_size;
static u64 ram_bytes;

static void read_boot_info(u64 info, u32 mode)
{
	if (mode == BOOT_MODE_LINUX64) {
		const u8 *bp = (const u8 *)info;
		cmdline = (const char *)(u64) * (const u32 *)(bp + 0x228);
		initrd_addr = *(const u32 *)(bp + 0x218);
		initrd_size = *(const u32 *)(bp + 0x21c);
		u8 n = bp[0x1e8];
		for (u32 i = 0; i < n; i++) {
			const u8 *e = bp + 0x2d0 + i * 20;
			if (*(const u32 *)(e + 16) == 1)
				ram_bytes += *(const u64 *)(e + 8);
		}
	} else {
		const u8 *si = (const u8 *)info;
		if (*(const u32 *)si != 0x336ec578) {
			puts("guest: bad hvm_start_info magic\n");
			return;
		}
		cmdline = (const char *)*(const u64 *)(si + 24);
		u32 nr_modules = *(const u32 *)(si + 12);
		if (nr_modules) {
			const u8 *m = (const u8 *)*(const u64 *)(si + 16);
			initrd_addr = *(const u64 *)m;
			initrd_size = *(const u64 *)(m + 8);
		}
		const u8 *map = (const u8 *)*(const u64 *)(si + 40);
		u32 n = *(const u32 *)(si + 48);
		for (u32 i = 0; i < n; i++) {
			const u8 *e = map + i * 24;
			if (*(const u32 *)(e + 16) == 1)
				ram_bytes += *(const u64 *)(e + 8);
		}
	}
	if (!cmdline)
		cmdline = "";
}

/* Value of "name=" on the command line, or 0. */
static const char *cmdline_find(const char *from, const char *name)
{
	usize n = strlen(name);
	const char *p = from;
	while (*p) {
		while (*p == ' ')
			p++;
		if (memeq(p, name, n))
			return p + n;
		while (*p && *p != ' ')
			p++;
	}
	return 0;
}

static u64 parse_num(const char **pp)
{
	const char *p = *pp;
	u64 v = 0;
	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
		p += 2;
		for (;;) {
			char c = *p;
			if (c >= '0' && c <= '9')
				v = v * 16 + (u64)(c - '0');
			else if (c >= 'a' && c <= 'f')
				v = v * 16 + (u64)(c - 'a' + 10);
			else if (c >= 'A' && c <= 'F')
				v = v * 16 + (u64)(c - 'A' + 10);
			else
				break;
			p++;
		}
	} else {
		while (*p >= '0' && *p <= '9')
			v = v * 10 + (u64)(*p++ - '0');
	}
	*pp = p;
	return v;
}

static u64 cmdline_num(const char *name, u64 dflt)
{
	const char *v = cmdline_find(cmdline, name);
	return v ? parse_num(&v) : dflt;
}

/* The next virtio_mmio.device=SIZE@BASE:IRQ on the command line from *pp; 0 at the end. */
static int next_device(const char **pp, u64 *base, u64 *irq)
{
	const char *p = cmdline_find(*pp, "virtio_mmio.device=");
	if (!p)
		return 0;
	parse_num(&p); /* size, e.g. 4 of "4K" */
	while (*p && *p != '@')
		p++;
	if (*p != '@')
		return 0;
	p++;
	*base = parse_num(&p);
	if (*p == ':')
		p++;
	*irq = parse_num(&p);
	*pp = p;
	return 1;
}

/* ---- MP table ---- */

static int mptable_cpus(void)
{
	for (u64 a = 0x9fc00; a < 0xa0000; a += 16) {
		if (memeq((const void *)a, "_MP_", 4)) {
			const u8 *t = (const u8 *)(u64) * (const u32 *)(a + 4);
			if (!memeq(t, "PCMP", 4))
				return -1;
			u16 len = *(const u16 *)(t + 4);
			int cpus = 0;
			for (u32 off = 44; off < len;) {
				if (t[off] == 0) {
					if (t[off + 3] & 1)
						cpus++;
					off += 20;
				} else {
					off += 8;
				}
			}
			return cpus;
		}
	}
	return -1;
}

/* ---- virtio-mmio ---- */

#define VIRTIO_MAGIC 0x000
#define VIRTIO_VERSION 0x004
#define VIRTIO_DEVICE_ID 0x008
#define VIRTIO_DEVICE_FEATURES 0x010
#define VIRTIO_DEVICE_FEATURES_SEL 0x014
#define VIRTIO_DRIVER_FEATURES 0x020
#define VIRTIO_DRIVER_FEATURES_SEL 0x024
#define VIRTIO_QUEUE_SEL 0x030
#define VIRTIO_QUEUE_NUM_MAX 0x034
#define VIRTIO_QUEUE_NUM 0x038
#define VIRTIO_QUEUE_READY 0x044
#define VIRTIO_QUEUE_NOTIFY 0x050
#define VIRTIO_INTERRUPT_STATUS 0x060
#define VIRTIO_INTERRUPT_ACK 0x064
#define VIRTIO_STATUS 0x070
#define VIRTIO_QUEUE_DESC_LOW 0x080
#define VIRTIO_QUEUE_DESC_HIGH 0x084
#define VIRTIO_QUEUE_DRIVER_LOW 0x090
#define VIRTIO_QUEUE_DRIVER_HIGH 0x094
#define VIRTIO_QUEUE_DEVICE_LOW 0x0a0
#define VIRTIO_QUEUE_DEVICE_HIGH 0x0a4
#define VIRTIO_CONFIG 0x100

#define STATUS_ACK 1
#define STATUS_DRIVER 2
#define STATUS_DRIVER_OK 4
#define STATUS_FEATURES_OK 8

#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2

#define QSZ 8
#define MAX_QUEUES 12

struct vring_desc {
	u64 addr;
	u32 len;
	u16 flags;
	u16 next;
};

struct vq {
	u64 base;
	u32 index;
	volatile struct vring_desc *desc;
	volatile u16 *avail; /* flags, idx, ring[QSZ] */
	volatile u8 *used;   /* flags, idx, {u32 id, u32 len}[QSZ] */
	u16 avail_idx;
	u16 last_used;
};

static u8 queue_mem[MAX_QUEUES][4096] __attribute__((aligned(4096)));
static int queues_used;

struct buf {
	void *addr;
	u32 len;
	int writable;
};

/* Resets the device, negotiates VERSION_1 plus `features` (low word), sets up `nq` queues. */
static int virtio_init(u64 base, u32 features, struct vq *qs, int nq)
{
	mmio_w32(base + VIRTIO_STATUS, 0);
	mmio_w32(base + VIRTIO_STATUS, STATUS_ACK);
	mmio_w32(base + VIRTIO_STATUS, STATUS_ACK | STATUS_DRIVER);
	mmio_w32(base + VIRTIO_DEVICE_FEATURES_SEL, 1);
	u32 hi = mmio_r32(base + VIRTIO_DEVICE_FEATURES);
	mmio_w32(base + VIRTIO_DEVICE_FEATURES_SEL, 0);
	u32 lo = mmio_r32(base + VIRTIO_DEVICE_FEATURES);
	if (!(hi & 1))
		return -1; /* no VIRTIO_F_VERSION_1 */
	mmio_w32(base + VIRTIO_DRIVER_FEATURES_SEL, 1);
	mmio_w32(base + VIRTIO_DRIVER_FEATURES, 1);
	mmio_w32(base + VIRTIO_DRIVER_FEATURES_SEL, 0);
	mmio_w32(base + VIRTIO_DRIVER_FEATURES, lo & features);
	mmio_w32(base + VIRTIO_STATUS, STATUS_ACK | STATUS_DRIVER | STATUS_FEATURES_OK);
	if (!(mmio_r32(base + VIRTIO_STATUS) & STATUS_FEATURES_OK))
		return -2;
	for (int i = 0; i < nq; i++) {
		if (queues_used >= MAX_QUEUES)
			return -3;
		u8 *m = queue_mem[queues_used++];
		struct vq *q = &qs[i];
		q->base = base;
		q->index = (u32)i;
		q->desc = (volatile struct vring_desc *)m;
		q->avail = (volatile u16 *)(m + 256);
		q->used = (volatile u8 *)(m + 512);
		q->avail_idx = 0;
		q->last_used = 0;
		mmio_w32(base + VIRTIO_QUEUE_SEL, (u32)i);
		if (mmio_r32(base + VIRTIO_QUEUE_NUM_MAX) < QSZ)
			return -4;
		mmio_w32(base + VIRTIO_QUEUE_NUM, QSZ);
		mmio_w32(base + VIRTIO_QUEUE_DESC_LOW, (u32)(u64)q->desc);
		mmio_w32(base + VIRTIO_QUEUE_DESC_HIGH, 0);
		mmio_w32(base + VIRTIO_QUEUE_DRIVER_LOW, (u32)(u64)q->avail);
		mmio_w32(base + VIRTIO_QUEUE_DRIVER_HIGH, 0);
		mmio_w32(base + VIRTIO_QUEUE_DEVICE_LOW, (u32)(u64)q->used);
		mmio_w32(base + VIRTIO_QUEUE_DEVICE_HIGH, 0);
		mmio_w32(base + VIRTIO_QUEUE_READY, 1);
	}
	mmio_w32(base + VIRTIO_STATUS,
		 STATUS_ACK | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
	if (mmio_r32(base + VIRTIO_STATUS) & 0x40)
		return -5; /* DEVICE_NEEDS_RESET */
	return 0;
}

/* Puts a chain made of `bufs` at descriptor `first` on the available ring. */
static void vq_add(struct vq *q, u16 first, const struct buf *bufs, int n)
{
	for (int i = 0; i < n; i++) {
		volatile struct vring_desc *d = &q->desc[first + i];
		d->addr = (u64)bufs[i].addr;
		d->len = bufs[i].len;
		d->flags = (u16)((i + 1 < n ? VRING_DESC_F_NEXT : 0) |
				 (bufs[i].writable ? VRING_DESC_F_WRITE : 0));
		d->next = (u16)(first + i + 1);
	}
	q->avail[2 + q->avail_idx % QSZ] = first;
	mb();
	q->avail_idx++;
	q->avail[1] = q->avail_idx;
	mb();
}

static void vq_notify(struct vq *q)
{
	mmio_w32(q->base + VIRTIO_QUEUE_NOTIFY, q->index);
}

/* Waits for the next used element; returns 1 and fills id/len, or 0 on timeout. */
static int vq_wait(struct vq *q, u32 *id, u32 *len, u64 timeout_cycles)
{
	u64 start = rdtsc();
	for (;;) {
		mb();
		u16 used_idx = *(volatile u16 *)(q->used + 2);
		if (used_idx != q->last_used) {
			volatile u8 *e = q->used + 4 + (q->last_used % QSZ) * 8;
			*id = *(volatile u32 *)e;
			*len = *(volatile u32 *)(e + 4);
			q->last_used++;
			/* Acknowledge any interrupt the device raised; we poll. */
			u32 isr = mmio_r32(q->base + VIRTIO_INTERRUPT_STATUS);
			if (isr)
				mmio_w32(q->base + VIRTIO_INTERRUPT_ACK, isr);
			return 1;
		}
		if (rdtsc() - start > timeout_cycles)
			return 0;
		cpu_relax();
	}
}

/* One request: chain at descriptor 0, notify, wait. Returns used length or -1. */
static long vq_request(struct vq *q, const struct buf *bufs, int n)
{
	u32 id, len;
	vq_add(q, 0, bufs, n);
	vq_notify(q);
	if (!vq_wait(q, &id, &len, 20000000000ULL))
		return -1;
	return len;
}

#define SECOND 3000000000ULL /* rough: the TSC runs at a few GHz */

/* ---- virtio-blk ---- */

struct blk_req {
	u32 type;
	u32 reserved;
	u64 sector;
};

static u8 blk_data[4096] __attribute__((aligned(512)));
static u8 blk_status;
static struct blk_req blk_hdr;

static long blk_rw(struct vq *q, u32 type, u64 sector, void *data, u32 len, u8 *status)
{
	struct buf b[3];
	int n = 0;
	blk_hdr.type = type;
	blk_hdr.reserved = 0;
	blk_hdr.sector = sector;
	b[n++] = (struct buf){ &blk_hdr, sizeof(blk_hdr), 0 };
	if (len)
		b[n++] = (struct buf){ data, len, type == 0 || type == 8 };
	blk_status = 0xff;
	b[n++] = (struct buf){ &blk_status, 1, 1 };
	long used = vq_request(q, b, n);
	*status = blk_status;
	return used;
}

static void test_blk(int idx, u64 base)
{
	struct vq q;
	u8 st;
	long used;
	puts("blk");
	put_dec((u64)idx);
	int rc = virtio_init(base, (1u << 5) | (1u << 9), &q, 1);
	if (rc) {
		puts(": init failed ");
		put_dec((u64)-rc);
		puts("\n");
		return;
	}
	u64 capacity = mmio_r32(base + VIRTIO_CONFIG) | ((u64)mmio_r32(base + VIRTIO_CONFIG + 4) << 32);
	mmio_w32(base + VIRTIO_DEVICE_FEATURES_SEL, 0);
	int ro = (mmio_r32(base + VIRTIO_DEVICE_FEATURES) >> 5) & 1;
	puts(": capacity ");
	put_dec(capacity);
	puts(" sectors ro=");
	put_dec((u64)ro);
	puts("\n");

	used = blk_rw(&q, 8, 0, blk_data, 20, &st);
	puts("blk");
	put_dec((u64)idx);
	puts(": id ");
	put_text(blk_data, 20);
	puts("\n");

	memset(blk_data, 0, 512);
	used = blk_rw(&q, 0, 0, blk_data, 512, &st);
	puts("blk");
	put_dec((u64)idx);
	puts(": read sector 0 status ");
	put_dec(st);
	puts(" used ");
	put_dec((u64)used);
	puts(" data '");
	put_text(blk_data, 64);
	puts("'\n");

	/* Write a recognisable sector 2, flush, read it back. */
	memset(blk_data, 0, 512);
	const char *msg = "written by the bulkhead test guest to sector 2";
	memcpy(blk_data, msg, strlen(msg));
	blk_data[508] = (u8)idx;
	used = blk_rw(&q, 1, 2, blk_data, 512, &st);
	puts("blk");
	put_dec((u64)idx);
	puts(": write sector 2 status ");
	put_dec(st);
	puts("\n");
	used = blk_rw(&q, 4, 0, 0, 0, &st);
	puts("blk");
	put_dec((u64)idx);
	puts(": flush status ");
	put_dec(st);
	puts("\n");
	if (!ro) {
		memset(blk_data, 0, 512);
		blk_rw(&q, 0, 2, blk_data, 512, &st);
		puts("blk");
		put_dec((u64)idx);
		puts(memeq(blk_data, msg, strlen(msg)) ? ": readback ok\n" : ": readback MISMATCH\n");
	}

	/* A read past the end must fail with VIRTIO_BLK_S_IOERR. */
	used = blk_rw(&q, 0, capacity, blk_data, 512, &st);
	puts("blk");
	put_dec((u64)idx);
	puts(": out-of-range read status ");
	put_dec(st);
	puts("\n");

	/* A buffer address outside guest memory: the device must refuse the chain (used
	 * length 0, status untouched) and keep working. */
	used = blk_rw(&q, 0, 0, (void *)0x7fff00000000ULL, 512, &st);
	puts("blk");
	put_dec((u64)idx);
	puts(": bad-address request used ");
	put_dec((u64)used);
	puts(" status ");
	put_hex(st);
	puts("\n");
	memset(blk_data, 0, 512);
	blk_rw(&q, 0, 0, blk_data, 512, &st);
	puts("blk");
	put_dec((u64)idx);
	puts(": after bad request read status ");
	put_dec(st);
	puts(" data '");
	put_text(blk_data, 16);
	puts("'\n");
}

/* ---- virtio-rng ---- */

static u8 rng_buf[32];

static void test_rng(u64 base)
{
	struct vq q;
	int rc = virtio_init(base, 0, &q, 1);
	if (rc) {
		puts("rng: init failed\n");
		return;
	}
	for (int round = 0; round < 2; round++) {
		memset(rng_buf, 0, sizeof(rng_buf));
		struct buf b = { rng_buf, sizeof(rng_buf), 1 };
		long used = vq_request(&q, &b, 1);
		puts("rng: ");
		put_dec((u64)used);
		puts(" bytes ");
		put_bytes_hex(rng_buf, sizeof(rng_buf));
		puts("\n");
	}
}

/* ---- virtio-vsock ---- */

struct vsock_hdr {
	u64 src_cid;
	u64 dst_cid;
	u32 src_port;
	u32 dst_port;
	u32 len;
	u16 type;
	u16 op;
	u32 flags;
	u32 buf_alloc;
	u32 fwd_cnt;
} __attribute__((packed));

#define VSOCK_OP_REQUEST 1
#define VSOCK_OP_RESPONSE 2
#define VSOCK_OP_RST 3
#define VSOCK_OP_SHUTDOWN 4
#define VSOCK_OP_RW 5
#define VSOCK_OP_CREDIT_UPDATE 6
#define VSOCK_OP_CREDIT_REQUEST 7
#define VSOCK_RX_BUFS 4
#define VSOCK_RX_SIZE 1024

static u8 vsock_rx[VSOCK_RX_BUFS][VSOCK_RX_SIZE];
static struct vsock_hdr vsock_tx_hdr;
static u8 vsock_tx_payload[256];
static u64 guest_cid;
static u32 vsock_fwd_cnt;

static void vsock_send(struct vq *tx, u32 src_port, u32 dst_port, u16 op, u32 flags,
		       const void *payload, u32 len)
{
	vsock_tx_hdr = (struct vsock_hdr){
		.src_cid = guest_cid,
		.dst_cid = 2,
		.src_port = src_port,
		.dst_port = dst_port,
		.len = len,
		.type = 1,
		.op = op,
		.flags = flags,
		.buf_alloc = 65536,
		.fwd_cnt = vsock_fwd_cnt,
	};
	struct buf b[2] = { { &vsock_tx_hdr, sizeof(vsock_tx_hdr), 0 } };
	int n = 1;
	if (len) {
		memcpy(vsock_tx_payload, payload, len);
		b[1] = (struct buf){ vsock_tx_payload, len, 0 };
		n = 2;
	}
	vq_request(tx, b, n);
}

/* Receives packets until one with an op in `ops_mask` arrives; copies it to hdr/payload.
 * Credit requests are answered on the way. */
static int vsock_recv(struct vq *rx, struct vq *tx, u32 ops_mask, struct vsock_hdr *hdr,
		      u8 *payload, u32 cap, u64 timeout)
{
	u64 start = rdtsc();
	while (rdtsc() - start < timeout) {
		u32 id, len;
		if (!vq_wait(rx, &id, &len, timeout / 8))
			continue;
		if (id >= VSOCK_RX_BUFS)
			continue;
		struct vsock_hdr h;
		memcpy(&h, vsock_rx[id], sizeof(h));
		u32 plen = h.len < cap ? h.len : cap;
		if (payload)
			memcpy(payload, vsock_rx[id] + sizeof(h), plen);
		/* Give the buffer back to the device. */
		struct buf b = { vsock_rx[id], VSOCK_RX_SIZE, 1 };
		vq_add(rx, (u16)id, &b, 1);
		vq_notify(rx);
		if (h.op == VSOCK_OP_RW)
			vsock_fwd_cnt += h.len;
		if (h.op == VSOCK_OP_CREDIT_REQUEST) {
			vsock_send(tx, h.dst_port, h.src_port, VSOCK_OP_CREDIT_UPDATE, 0, 0, 0);
			continue;
		}
		if (ops_mask & (1u << h.op)) {
			*hdr = h;
			return 1;
		}
	}
	return 0;
}

static u32 vsock_event;

/* Resets and sets up the device with its RX buffers and one event buffer; 0 on success. */
static int vsock_setup(u64 base, struct vq *q)
{
	int rc = virtio_init(base, 0, q, 3);
	if (rc) {
		puts("vsock: init failed\n");
		return rc;
	}
	guest_cid = mmio_r32(base + VIRTIO_CONFIG) | ((u64)mmio_r32(base + VIRTIO_CONFIG + 4) << 32);
	puts("vsock: guest cid ");
	put_dec(guest_cid);
	puts("\n");
	for (u16 i = 0; i < VSOCK_RX_BUFS; i++) {
		struct buf b = { vsock_rx[i], VSOCK_RX_SIZE, 1 };
		vq_add(&q[0], i, &b, 1);
	}
	vq_notify(&q[0]);
	vsock_event = 0xffffffff;
	struct buf e = { &vsock_event, sizeof(vsock_event), 1 };
	vq_add(&q[2], 0, &e, 1);
	vq_notify(&q[2]);
	return 0;
}

/* Both directions of a connection: to the host's port, then from the host. */
static void vsock_exchange(struct vq *q)
{
	struct vsock_hdr h;
	u8 data[128];
	struct vq *rx = &q[0], *tx = &q[1];

	/* Guest-initiated: connect to the host's port, send a line, read the reply. */
	u32 port = (u32)cmdline_num("bulkhead_test.vsock_port=", 5000);
	u32 local = 49152;
	vsock_fwd_cnt = 0;
	vsock_send(tx, local, port, VSOCK_OP_REQUEST, 0, 0, 0);
	if (!vsock_recv(rx, tx, (1u << VSOCK_OP_RESPONSE) | (1u << VSOCK_OP_RST), &h, 0, 0,
			5 * SECOND) ||
	    h.op != VSOCK_OP_RESPONSE) {
		puts("vsock: connect to host port ");
		put_dec(port);
		puts(" refused\n");
	} else {
		puts("vsock: connected to host port ");
		put_dec(port);
		puts("\n");
		const char *msg = "hello from the guest over vsock\n";
		vsock_send(tx, local, port, VSOCK_OP_RW, 0, msg, (u32)strlen(msg));
		memset(data, 0, sizeof(data));
		if (vsock_recv(rx, tx, 1u << VSOCK_OP_RW, &h, data, sizeof(data) - 1, 10 * SECOND)) {
			puts("vsock: host replied '");
			put_text(data, h.len);
			puts("'\n");
		} else {
			puts("vsock: no reply from host\n");
		}
		vsock_send(tx, local, port, VSOCK_OP_SHUTDOWN, 3, 0, 0);
		if (vsock_recv(rx, tx, 1u << VSOCK_OP_RST, &h, 0, 0, 5 * SECOND))
			puts("vsock: connection closed\n");
	}

	/* Host-initiated: the host connects to the Unix socket and asks for our port. */
	u32 listen = (u32)cmdline_num("bulkhead_test.listen_port=", 1234);
	puts("vsock: listening on port ");
	put_dec(listen);
	puts("\n");
	if (!vsock_recv(rx, tx, 1u << VSOCK_OP_REQUEST, &h, 0, 0, 20 * SECOND)) {
		puts("vsock: no host connection\n");
		return;
	}
	if (h.dst_port != listen) {
		vsock_send(tx, h.dst_port, h.src_port, VSOCK_OP_RST, 0, 0, 0);
		puts("vsock: refused connection to another port\n");
		return;
	}
	u32 peer = h.src_port;
	vsock_fwd_cnt = 0; /* credit counters are per connection */
	vsock_send(tx, listen, peer, VSOCK_OP_RESPONSE, 0, 0, 0);
	memset(data, 0, sizeof(data));
	if (!vsock_recv(rx, tx, 1u << VSOCK_OP_RW, &h, data, sizeof(data) - 1, 10 * SECOND)) {
		puts("vsock: host sent nothing\n");
		return;
	}
	puts("vsock: host sent '");
	put_text(data, h.len);
	puts("'\n");
	/* Echo it back upper-cased, so the host sees the guest processed it. */
	for (u32 i = 0; i < h.len; i++)
		if (data[i] >= 'a' && data[i] <= 'z')
			data[i] = (u8)(data[i] - 32);
	vsock_send(tx, listen, peer, VSOCK_OP_RW, 0, data, h.len);
	if (vsock_recv(rx, tx, (1u << VSOCK_OP_SHUTDOWN) | (1u << VSOCK_OP_RST), &h, 0, 0,
		       10 * SECOND)) {
		if (h.op == VSOCK_OP_SHUTDOWN)
			vsock_send(tx, listen, peer, VSOCK_OP_RST, 0, 0, 0);
		puts("vsock: host closed the connection\n");
	}
}

static void test_vsock(u64 base)
{
	struct vq q[3];
	if (vsock_setup(base, q) == 0)
		vsock_exchange(q);
}

/* ---- virtio-net ---- */

#define NET_HDR_LEN 12 /* struct virtio_net_hdr_v1 */
#define NET_RX_BUFS 4
static u8 net_rx[NET_RX_BUFS][2048];
static u8 net_tx[2048];

static void test_net(u64 base)
{
	struct vq q[2];
	int rc = virtio_init(base, 1u << 5 /* MAC */, q, 2);
	if (rc) {
		puts("net: init failed\n");
		return;
	}
	u8 mac[6];
	for (int i = 0; i < 6; i++)
		mac[i] = mmio_r8(base + VIRTIO_CONFIG + (u64)i);
	puts("net: mac ");
	put_bytes_hex(mac, 6);
	puts("\n");
	for (u16 i = 0; i < NET_RX_BUFS; i++) {
		struct buf b = { net_rx[i], sizeof(net_rx[i]), 1 };
		vq_add(&q[0], i, &b, 1);
	}
	vq_notify(&q[0]);

	memset(net_tx, 0, sizeof(net_tx));
	u8 *f = net_tx + NET_HDR_LEN;
	memset(f, 0xff, 6);
	memcpy(f + 6, mac, 6);
	f[12] = 0x88;
	f[13] = 0xb5; /* IEEE local experimental ethertype */
	const char *msg = "bulkhead-net-ping from the guest";
	memcpy(f + 14, msg, strlen(msg));
	u32 frame = 14 + 46; /* minimum Ethernet payload */
	struct buf b = { net_tx, NET_HDR_LEN + frame, 0 };
	long used = vq_request(&q[1], &b, 1);
	puts("net: sent a frame, tx used ");
	put_dec((u64)(used < 0 ? 0 : used));
	puts("\n");

	u64 start = rdtsc();
	while (rdtsc() - start < 20 * SECOND) {
		u32 id, len;
		if (!vq_wait(&q[0], &id, &len, SECOND))
			continue;
		if (id >= NET_RX_BUFS)
			continue;
		u8 *r = net_rx[id] + NET_HDR_LEN;
		int ours = len > NET_HDR_LEN + 14 && r[12] == 0x88 && r[13] == 0xb5;
		if (ours) {
			puts("net: received '");
			put_text(r + 14, len - NET_HDR_LEN - 14);
			puts("'\n");
		}
		struct buf rb = { net_rx[id], sizeof(net_rx[id]), 1 };
		vq_add(&q[0], (u16)id, &rb, 1);
		vq_notify(&q[0]);
		if (ours)
			return;
	}
	puts("net: nothing received\n");
}

/* ---- snapshot test modes ---- */

static int serial_ready(void)
{
	return inb(COM1 + 5) & 1;
}

static u8 serial_wait(void)
{
	while (!serial_ready())
		cpu_relax();
	return inb(COM1);
}

/* The i8042's output buffer (the host's Ctrl+Alt+Del). */
static int kbd_ready(void)
{
	return inb(0x64) & 1;
}

/* Writes one word of every page from 16 MiB to bulkhead_test.touch_mib= MiB; the page count. */
static u64 write_pages(u64 salt)
{
	u64 mib = cmdline_num("bulkhead_test.touch_mib=", 0);
	u64 end = mib << 20;
	if (end > ram_bytes)
		end = ram_bytes & ~0xfffULL;
	u64 pages = 0;
	for (u64 a = 16 << 20; a < end; a += 4096, pages++)
		*(volatile u64 *)a = a ^ 0x5a5a5a5a5a5a5a5aULL ^ salt;
	return pages;
}

static void touch_memory(void)
{
	u64 pages = write_pages(0);
	puts("touched ");
	put_dec(pages * 4096 >> 20);
	puts(" MiB\n");
}

/* Written by the disk only: 8 slots of one sector, one page each. */
static u8 count_disk_buf[8 * 4096] __attribute__((aligned(4096)));

static void count_mode(void)
{
	touch_memory();
	struct vq dq;
	u64 sectors = 0;
	const char *p = cmdline;
	u64 base, irq;
	while (next_device(&p, &base, &irq)) {
		if (mmio_r32(base + VIRTIO_DEVICE_ID) == 2 && !sectors) {
			if (virtio_init(base, 1u << 9, &dq, 1)) {
				puts("count: disk init failed\n");
				return;
			}
			sectors = mmio_r32(base + VIRTIO_CONFIG);
			puts("count: reading the disk (");
			put_dec(sectors);
			puts(" sectors)\n");
		}
	}
	u64 h = 0xcbf29ce484222325ULL;
	for (u64 n = 1;; n++) {
		h = (h ^ n) * 0x100000001b3ULL;
		if (sectors) {
			u8 st;
			u8 *slot = count_disk_buf + (n % 8) * 4096;
			if (blk_rw(&dq, 0, n % sectors, slot, 512, &st) < 0 || st != 0) {
				puts("count: disk read failed\n");
				return;
			}
			const u64 *w = (const u64 *)count_disk_buf;
			for (usize i = 0; i < sizeof(count_disk_buf) / 8; i++)
				h = (h ^ w[i]) * 0x100000001b3ULL;
		}
		puts("count ");
		put_dec(n);
		puts(" ");
		put_hex(h);
		puts("\n");
		u8 host = serial_ready() ? inb(COM1) : 0;
		if (host == 's') {
			puts("count: stopped by the host\n");
			return;
		}
		if (host == 'r') {
			/* Rewrite the touched pages once, timed by the TSC: what writing memory costs
			 * the guest (with dirty page tracking, a fault per page after each snapshot). */
			u64 t0 = rdtsc();
			write_pages(n);
			u64 t1 = rdtsc();
			puts("rewrite: ");
			put_dec(t1 - t0);
			puts(" ticks\n");
		}
		if (kbd_ready()) {
			puts("i8042: key codes");
			while (kbd_ready()) {
				puts(" ");
				put_hex(inb(0x60));
			}
			puts(": ctrl-alt-del, shutting down\n");
			return;
		}
	}
}

static void devices_mode(void)
{
	u64 blk_base = 0, rng_base = 0, vsock_base = 0;
	const char *p = cmdline;
	u64 base, irq;
	while (next_device(&p, &base, &irq)) {
		u32 id = mmio_r32(base + VIRTIO_DEVICE_ID);
		if (id == 2 && !blk_base)
			blk_base = base;
		else if (id == 4)
			rng_base = base;
		else if (id == 19)
			vsock_base = base;
	}
	if (!blk_base || !rng_base || !vsock_base) {
		puts("devices: needs a disk, rng and vsock\n");
		return;
	}
	struct vq bq, rq, vq[3];
	if (virtio_init(blk_base, 1u << 9, &bq, 1) || virtio_init(rng_base, 0, &rq, 1) ||
	    vsock_setup(vsock_base, vq)) {
		puts("devices: init failed\n");
		return;
	}
	/* A device may serve available buffers whenever it likes: this one does when it sees its
	 * activation (after DRIVER_OK). Once a notified request has completed it has seen it (the
	 * VMM's event loop takes the activation before the later notification), so a request
	 * that is then only made available stays unserved until something notifies. */
	u8 st;
	if (blk_rw(&bq, 8, 0, blk_data, 20, &st) < 0) {
		puts("devices: disk does not answer\n");
		return;
	}
	/* A write to sector 3, made available to the device but not notified. */
	memset(blk_data, 0, 512);
	const char *msg = "written across a snapshot by the bulkhead test guest";
	memcpy(blk_data, msg, strlen(msg));
	blk_hdr = (struct blk_req){ 1, 0, 3 };
	blk_status = 0xff;
	struct buf b[3] = { { &blk_hdr, sizeof(blk_hdr), 0 }, { blk_data, 512, 0 },
			    { &blk_status, 1, 1 } };
	vq_add(&bq, 0, b, 3);
	puts("blk: write queued\n");
	u8 c = serial_wait();
	if (c == 'n')
		vq_notify(&bq);
	u32 id, len;
	if (vq_wait(&bq, &id, &len, 20000000000ULL)) {
		puts("blk: write completed status ");
		put_dec(blk_status);
		puts("\n");
	} else {
		puts("blk: write not completed\n");
	}

	memset(rng_buf, 0, sizeof(rng_buf));
	struct buf r = { rng_buf, 16, 1 };
	long used = vq_request(&rq, &r, 1);
	int nonzero = 0;
	for (int i = 0; i < 16; i++)
		nonzero |= rng_buf[i];
	puts("rng: ");
	put_dec((u64)(used < 0 ? 0 : used));
	puts(nonzero ? " random bytes\n" : " bytes, all zero\n");

	if (*(volatile u16 *)(vq[2].used + 2) != vq[2].last_used) {
		puts("vsock: transport reset event id ");
		put_dec(vsock_event);
		puts("\n");
	} else {
		puts("vsock: no transport reset event\n");
	}
	vsock_exchange(vq);
	puts("devices: done\n");
}

/* ---- main ---- */

static u32 fnv1a(const u8 *p, u64 n)
{
	u32 h = 2166136261u;
	while (n--) {
		h ^= *p++;
		h *= 16777619u;
	}
	return h;
}

void guest_main(u64 info, u32 mode)
{
	puts("\nbulkhead test guest: entered via ");
	puts(mode == BOOT_MODE_PVH ? "pvh" : "linux64");
	puts(", info at ");
	put_hex(info);
	puts("\n");
	read_boot_info(info, mode);
	puts("cmdline: ");
	puts(cmdline);
	puts("\n");
	puts("e820: ");
	put_dec(ram_bytes >> 20);
	puts(" MiB usable RAM\n");
	int cpus = mptable_cpus();
	if (cpus < 0) {
		puts("mptable: none\n");
	} else {
		puts("mptable: ");
		put_dec((u64)cpus);
		puts(" cpus\n");
	}
	if (initrd_size) {
		puts("initrd: ");
		put_dec(initrd_size);
		puts(" bytes at ");
		put_hex(initrd_addr);
		puts(" fnv1a ");
		put_hex(fnv1a((const u8 *)initrd_addr, initrd_size));
		puts("\n");
	}

	outb(0x3f0, 123);
	puts("boot-timer: written\n");

	const char *test_mode = cmdline_find(cmdline, "bulkhead_test.mode=");
	if (test_mode && memeq(test_mode, "count", 5)) {
		count_mode();
		goto done;
	}
	if (test_mode && memeq(test_mode, "devices", 7)) {
		devices_mode();
		goto done;
	}

	int blk_idx = 0;
	const char *p = cmdline;
	u64 base, irq;
	while (next_device(&p, &base, &irq)) {
		if (mmio_r32(base + VIRTIO_MAGIC) != 0x74726976 || mmio_r32(base + VIRTIO_VERSION) != 2) {
			puts("virtio: no device at ");
			put_hex(base);
			puts("\n");
			continue;
		}
		u32 id = mmio_r32(base + VIRTIO_DEVICE_ID);
		puts("virtio: device type ");
		put_dec(id);
		puts(" at ");
		put_hex(base);
		puts(" irq ");
		put_dec(irq);
		puts("\n");
		switch (id) {
		case 1:
			test_net(base);
			break;
		case 2:
			test_blk(blk_idx++, base);
			break;
		case 4:
			test_rng(base);
			break;
		case 19:
			test_vsock(base);
			break;
		default:
			puts("virtio: unknown device type\n");
		}
	}

done:
	puts("guest: done, shutting down via i8042\n");
	outb(0x64, 0xfe);
	/* Still here: not bulkhead (QEMU microvm has no i8042 reset). isa-debug-exit, if
	 * present, ends QEMU; otherwise halt. */
	outb(0xf4, 0);
	for (;;)
		__asm__ volatile("cli; hlt");
}
