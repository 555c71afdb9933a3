// Regenerates the reference-derived vectors in this folder from the
// reference implementation (proxy-packer 2.0.4 and sni 1.0.0 from npm).
// Not needed at test time; see README.md.
//
//   mkdir /tmp/pp && cd /tmp/pp && npm install proxy-packer@2.0.4 sni@1.0.0
//   NODE_PATH=/tmp/pp/node_modules node tests/vectors/gen.js
'use strict';

var fs = require('fs');
var path = require('path');
var child = require('child_process');
var Packer = require('proxy-packer');
var sni = require('sni');

var here = __dirname;
var hello = fs.readFileSync(path.join(here, 'sni.tcp.bin'));

function out(name, data) {
	fs.writeFileSync(path.join(here, name), data);
	console.log('wrote ' + name);
}

// Deterministic, so a rerun rewrites the same bytes.
var seed = 0x2545f491;
function rnd(n) {
	seed ^= seed << 13;
	seed >>>= 0;
	seed ^= seed >>> 17;
	seed ^= seed << 5;
	seed >>>= 0;
	return seed % n;
}

// ---- extra-cases.json: pack()/packHeader() cases, format as mproxy-cases.json

function hexOf(d) {
	if (d === undefined || d === null) return '';
	if (!Buffer.isBuffer(d)) d = Buffer.from(JSON.stringify(d));
	return d.toString('hex');
}

var cases = [];
function add(fn, meta, data, service, note) {
	var copy = JSON.parse(JSON.stringify(meta));
	var buf = fn === 'pack'
		? Packer.pack(copy, data, service)
		: Packer.packHeader(copy, data, service);
	var c = { fn: fn, note: note, meta: meta };
	if (data !== undefined && data !== null && !Buffer.isBuffer(data))
		c.json = data;
	else if (data && data.length > 4096 && data.equals(Buffer.alloc(
	    data.length, data[0])))
		c.data_repeat = { byte: data[0], count: data.length };
	else
		c.data = hexOf(data);
	if (service !== undefined) c.service = service;
	c.expected = buf.toString('hex');
	c.expected_text_prefix = buf.slice(2, 2 + buf[1]).toString('latin1');
	cases.push(c);
}

var v6 = { family: 'IPv6', address: 'fe80::1ff:fe23:4567:890a', port: 65535,
	service: 'tcp', serviceport: 65535, name: 'db.internal.example' };
add('pack', v6, Buffer.from('hello'), undefined, 'IPv6, maximum ports');
add('pack', {}, Buffer.from('abc'), undefined, 'empty meta: every field empty');
add('pack', { family: 'IPv4', address: '10.1.2.3', port: 0, service: 'tcp' },
	Buffer.from('x'), undefined, 'port 0 is written');
add('pack', { family: 'IPv4', address: '10.1.2.3', port: 9, service: 'tcp',
	serviceport: 0, name: '' }, Buffer.from('x'), undefined,
	'serviceport 0 and an empty name are empty fields');
add('pack', { family: 'IPv4', address: '10.1.2.3', port: 9 },
	Buffer.from('x'), undefined, 'no service: empty field');
add('pack', { family: 'IPv4', address: '10.1.2.3' }, Buffer.from('x'),
	undefined, 'no port: empty field');
add('pack', { family: 'IPv4', address: '127.0.0.1', port: 50312,
	service: 'ssh', serviceport: 22, name: 'nas' }, null, 'connection',
	'pack() of a connection frame: one-space payload, eighth field');
add('packHeader', { family: 'IPv4', address: '127.0.0.1', port: 50312,
	name: 'nas' }, null, 'connection',
	'connection frame without meta.service: empty eighth field');
add('packHeader', { family: 'IPv4', address: '127.0.0.1', port: 50312,
	service: 'ssh' }, null, 'connection',
	'the tunnel connection frame: ,0,connection,,,ssh');
add('packHeader', { family: 'IPv4', address: '127.0.0.1', port: 50312,
	service: 'tcp' }, Buffer.alloc(65536, 0x61), undefined,
	'packHeader() writes the header only; datalen 65536');
add('packHeader', { family: 'IPv4', address: '127.0.0.1', port: 50312,
	service: 'tcp' }, null, 'end', 'packHeader() of end: datalen 0');
add('pack', { family: 'IPv4', address: '127.0.0.1', port: 50312 },
	Buffer.alloc(0), 'control', 'pack() of an empty control frame');
add('pack', { family: 'IPv4', address: '127.0.0.1', port: 50312,
	service: 'tcp' }, [1, 'ping'], 'control', 'keepalive');
add('pack', { family: 'IPv4', address: '127.0.0.1', port: 50312,
	service: 'tcp' }, { message: 'read ECONNRESET', code: 'ECONNRESET' },
	'error', 'error frame with JSON payload');
add('pack', { family: 'IPv4', address: '127.0.0.1', port: 50312,
	service: 'tcp' }, Buffer.from([0xfe, 0x00, 0x2c, 0x0a, 0xff]), 'udp',
	'binary payload with a version byte and a comma in it');
var bytes = Buffer.alloc(1000);
for (var i = 0; i < bytes.length; i++) bytes[i] = rnd(256);
add('pack', { family: 'IPv4', address: '192.168.100.200', port: 1,
	service: 'https', serviceport: 443, name: 'a.example' }, bytes,
	undefined, '1000 random bytes');
// 255 bytes exactly: the longest header a frame can carry.
var head = 'IPv4,1.2.3.4,5,1,tcp,,';
add('pack', { family: 'IPv4', address: '1.2.3.4', port: 5, service: 'tcp',
	name: 'n'.repeat(255 - head.length) }, Buffer.from('z'), undefined,
	'a 255-byte header');
out('extra-cases.json', JSON.stringify(cases, null, 1) + '\n');

// ---- pack.js runs: NAME.json + payload -> NAME.expected.bin

var packjs = require.resolve('proxy-packer/test/pack.js');
var runs = [
	{ name: 'pack-sni', file: 'sni.tcp.bin', address: { family: 'IPv4',
		address: '127.0.1.1', port: 4321, service: 'https',
		serviceport: 443 } },
	{ name: 'pack-http', file: 'http-get.txt', address: { family: 'IPv6',
		address: '::ffff:10.0.0.9', port: 61000, service: 'http',
		serviceport: 80 } },
	{ name: 'pack-http-nohost', file: 'http-nohost.txt', address: {
		family: 'IPv4', address: '10.0.0.9', port: 61001,
		service: 'http' } },
	{ name: 'pack-kelvin', file: 'http-kelvin.txt', address: {
		family: 'IPv4', address: '10.0.0.9', port: 61002,
		service: 'http', serviceport: 8080 } },
	{ name: 'pack-empty', file: 'empty.txt', address: { family: 'IPv4',
		address: '10.0.0.9', port: 61003, service: 'tcp' } }
];
out('http-get.txt', 'GET /index.html HTTP/1.1\r\nUser-Agent: curl/7.88\r\n' +
	'HOST: WWW.Example.COM:8080\r\nAccept: */*\r\n\r\n');
out('http-nohost.txt', 'POST /x HTTP/1.0\r\nX-Host: nope.example\r\n' +
	'Content-Length: 0\r\n\r\n');
out('http-kelvin.txt', 'GET / HTTP/1.1\r\nhost: \u212Aitten.Example\r\n\r\n');
out('empty.txt', '');
runs.forEach(function(r) {
	var json = path.join(here, r.name + '.json');
	out(r.name + '.json', JSON.stringify({ version: 1, address: r.address,
		filepath: './' + r.file }, null, '\t') + '\n');
	child.execFileSync('node', [packjs, json,
		path.join(here, r.name + '.expected.bin')]);
	console.log('wrote ' + r.name + '.expected.bin (pack.js)');
});

// ---- streams and what the reference decoder makes of them (JSON lines)

function decode(buf) {
	var lines = [];
	var machine;
	function rec(msg) {
		var m = machine;
		var o = {
			family: m.family || '', address: m.address || '',
			port: m.port || '', datalen: m.bodyLen,
			service: m.service || '', serviceport: m.serviceport || '',
			name: m.name || ''
		};
		if (m.service === 'connection') o.connservice = m.servicename || '';
		o.data = msg.data ? msg.data.toString('base64') : '';
		lines.push(JSON.stringify(o));
	}
	machine = Packer.create({ onmessage: rec, oncontrol: rec,
		onconnection: rec, onerror: rec, onend: rec, onpause: rec,
		onresume: rec });
	machine.fns.addChunk(buf);
	return lines.join('\n') + '\n';
}

var addr = { family: 'IPv4', address: '127.0.0.1', port: 50312,
	service: 'ssh', serviceport: 22, name: 'nas' };
function a() { return JSON.parse(JSON.stringify(addr)); }
var tunnel = Buffer.concat([
	Packer.packHeader(a(), null, 'connection'),
	Packer.pack(a(), Buffer.from('SSH-2.0-OpenSSH_9.2\r\n'), 'tcp'),
	Packer.pack(a(), [1, 'ping'], 'control'),
	Packer.pack(a(), bytes, 'tcp'),
	Packer.pack(a(), null, 'end'),
	Packer.pack(a(), { message: 'read ECONNRESET', code: 'ECONNRESET' },
		'error')
]);
out('stream-tunnel.bin', tunnel);
out('stream-tunnel.jsonl', decode(tunnel));

// The hand-packed stream of the reference's test/parse.js: zero-length
// connection and end frames around the ClientHello.
var p = { family: 'IPv4', address: '127.0.1.1', port: 4321,
	service: 'foo-https', serviceport: 443,
	name: 'foo-pokemap.hellabit.com' };
var ch = p.family + ',' + p.address + ',' + p.port + ',0,connection,' +
	p.serviceport + ',' + p.name + ',' + p.service;
var dh = p.family + ',' + p.address + ',' + p.port + ',' + hello.length +
	',' + p.service + ',' + p.serviceport + ',' + p.name;
var eh = p.family + ',' + p.address + ',' + p.port + ',0,end,' +
	p.serviceport + ',' + p.name;
var parse = Buffer.concat([
	Buffer.from([0xfe, ch.length]), Buffer.from(ch),
	Buffer.from([0xfe, dh.length]), Buffer.from(dh), hello,
	Buffer.from([0xfe, eh.length]), Buffer.from(eh)
]);
out('stream-parse.bin', parse);
out('stream-parse.jsonl', decode(parse));
out('sni.tunneled.jsonl', decode(fs.readFileSync(path.join(here,
	'sni.tunneled.bin'))));

// ---- sniff-cases.json: what sni() and the Host regex make of payloads

function hostOf(buf) {
	var m = buf.toString().match(/(?:^|[\r\n])Host: ([^\r\n]+)[\r\n]*/im);
	return m ? m[1].toLowerCase().split(':')[0] : null;
}

function u16(n) { return [n >> 8 & 0xff, n & 0xff]; }

// A ClientHello: o.sid, o.ciphers, o.comp lengths, o.exts [{type, data}].
function clientHello(o) {
	var body = [0x03, 0x03].concat(new Array(32).fill(7));
	body.push(o.sid || 0);
	for (i = 0; i < (o.sid || 0); i++) body.push(1);
	var cs = o.ciphers === undefined ? 2 : o.ciphers;
	body = body.concat(u16(o.cslen === undefined ? cs : o.cslen));
	for (i = 0; i < cs; i++) body.push(0x2f);
	var comp = o.comp === undefined ? 1 : o.comp;
	body.push(comp);
	for (i = 0; i < comp; i++) body.push(0);
	var ext = [];
	(o.exts || []).forEach(function(e) {
		ext = ext.concat(u16(e.type), u16(e.len === undefined ?
			e.data.length : e.len), e.data);
	});
	body = body.concat(u16(o.extlen === undefined ? ext.length : o.extlen),
		ext);
	var hs = [0x01, 0, body.length >> 8, body.length & 0xff].concat(body);
	return Buffer.from([0x16, 0x03, 0x01].concat(u16(hs.length), hs));
}
function sniList(names, listlen) {
	var l = [];
	names.forEach(function(n) {
		var b = Array.from(Buffer.from(n.name, 'latin1'));
		l = l.concat([n.type || 0], u16(n.len === undefined ? b.length :
			n.len), b);
	});
	return u16(listlen === undefined ? l.length : listlen).concat(l);
}

var sniffs = [];
function sniff(note, buf) {
	var s = sni(buf);
	var h = hostOf(buf);
	sniffs.push({ note: note, hex: buf.toString('hex'), sni: s, host: h,
		name: s || ((h === null ? '' : h)) });
}

sniff('the seed ClientHello', hello);
sniff('empty', Buffer.alloc(0));
sniff('43 bytes: no session id length', hello.slice(0, 43));
[10, 44, 80, 120, 150, 180, 198].forEach(function(n) {
	sniff('seed truncated to ' + n, hello.slice(0, n));
});
sniff('built: one name', clientHello({ exts: [{ type: 0,
	data: sniList([{ name: 'example.org' }]) }] }));
sniff('built: name after other extensions', clientHello({ sid: 32,
	ciphers: 40, comp: 2, exts: [{ type: 10, data: [0, 2, 0, 23] },
	{ type: 0, data: sniList([{ name: 'second.example' }]) }] }));
sniff('built: first name of type 1 is skipped', clientHello({ exts: [{
	type: 0, data: sniList([{ type: 1, name: 'skip.me' },
	{ name: 'taken.example' }]) }] }));
sniff('built: empty name', clientHello({ exts: [{ type: 0,
	data: sniList([{ name: '' }, { name: 'x' }]) }] }));
sniff('built: high-bit bytes lose their high bit', clientHello({ exts: [{
	type: 0, data: sniList([{ name: '\xe9xample.\xff' }]) }] }));
sniff('built: name length past the extensions', clientHello({ exts: [{
	type: 0, data: sniList([{ name: 'abc', len: 200 }]) }] }));
sniff('built: name list past the extensions', clientHello({ exts: [{
	type: 0, data: sniList([{ name: 'abc' }], 500) }] }));
sniff('built: name list shorter than its entry', clientHello({ exts: [{
	type: 0, data: sniList([{ name: 'abcdef' }], 3) }] }));
sniff('built: extensions length past the end', clientHello({ extlen: 9000,
	exts: [{ type: 0, data: sniList([{ name: 'a' }]) }] }));
sniff('built: extension size past the end', clientHello({ exts: [{
	type: 5, len: 0xffff, data: [1, 2] }, { type: 0,
	data: sniList([{ name: 'a' }]) }] }));
sniff('built: session id 255', clientHello({ sid: 255, exts: [{ type: 0,
	data: sniList([{ name: 'long.sid' }]) }] }));
sniff('built: cipher suites length 0xffff', clientHello({ cslen: 0xffff,
	exts: [{ type: 0, data: sniList([{ name: 'a' }]) }] }));
sniff('built: 2000 cipher suites', clientHello({ ciphers: 2000, exts: [{
	type: 0, data: sniList([{ name: 'many.ciphers' }]) }] }));
sniff('built: server_name extension without a list', clientHello({ exts: [{
	type: 0, data: [] }] }));
sniff('built: no extensions', clientHello({}));
sniff('built: comma and NUL in the name', clientHello({ exts: [{ type: 0,
	data: sniList([{ name: 'a,b\x00c' }]) }] }));
for (var k = 0; k < 200; k++) {
	var m = Buffer.from(hello);
	var flips = 1 + rnd(3);
	for (var f = 0; f < flips; f++) {
		// Mostly the length fields and the name, sometimes anywhere.
		var at = rnd(4) === 0 ? rnd(m.length) :
			[43, 44, 45, 46, 0x7c, 0x7d, 0x7e, 0x7f, 0x80, 0x81, 0x82,
			 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a][rnd(19)];
		m[at] = [0, 1, 0xff, 0x7f, 0x80, rnd(256)][rnd(6)];
	}
	if (rnd(3) === 0) m = m.slice(0, rnd(m.length));
	sniff('seed mutated #' + k, m);
}
[
	'GET / HTTP/1.1\r\nHost: example.com\r\n\r\n',
	'GET / HTTP/1.1\r\nhost: EXAMPLE.com:443\r\n\r\n',
	'Host: first.line:1\r\n',
	'GET / HTTP/1.1\nHost: lf.only\n\n',
	'GET / HTTP/1.1\rHost: cr.only\r',
	'GET / HTTP/1.1\r\nHost:no-space.example\r\n\r\n',
	'GET / HTTP/1.1\r\nHost:  two-spaces.example\r\n\r\n',
	'GET / HTTP/1.1\r\nHost: \r\nHost: second.example\r\n',
	'GET / HTTP/1.1\r\nX-Host: not.this\r\nHost: this.one\r\n',
	'GET / HTTP/1.1\r\nHost: :8080\r\n',
	'GET / HTTP/1.1\r\nHost: [::1]:8080\r\n',
	'GET / HTTP/1.1\r\nHost: a b c\r\n',
	'GET / HTTP/1.1\r\nHost: end.of.input',
	'GET / HTTP/1.1\r\nHost: ',
	'GET / HTTP/1.1\r\nHost:',
	'xHost: glued.example\r\n',
	'Line\u2028Host: after.ls.example\r\n',
	'Line\u2029Host: after.ps.example\r\n',
	'GET / HTTP/1.1\r\nHost: \u212Aelvin.example\r\n',
	'GET / HTTP/1.1\r\nHost: caf\u00e9.example\r\n',
	'GET / HTTP/1.1\r\nHost: ok.example:\u00e9\r\n',
	'GET / HTTP/1.1\r\nHost: comma,host\r\n',
	'GET / HTTP/1.1\r\nHost: tab\there\r\n'
].forEach(function(s) {
	sniff('http ' + JSON.stringify(s), Buffer.from(s));
});
sniff('http with invalid UTF-8 before Host', Buffer.concat([
	Buffer.from([0xf0, 0x9f, 0x0a]), Buffer.from('Host: after.bad\r\n')]));
sniff('http invalid UTF-8 then LS', Buffer.concat([Buffer.from([0xe2, 0xe2,
	0x80, 0xa8]), Buffer.from('Host: ls.example\r\n')]));
sniff('http invalid UTF-8 in the value', Buffer.concat([
	Buffer.from('Host: bad'), Buffer.from([0xff]), Buffer.from('.x\r\n')]));
sniff('ClientHello and a Host line: SNI wins', Buffer.concat([hello,
	Buffer.from('\r\nHost: other.example\r\n')]));
sniff('empty SNI name falls back to Host', Buffer.concat([clientHello({
	exts: [{ type: 0, data: sniList([{ name: '' }]) }] }),
	Buffer.from('\nHost: fallback.example\n')]));
for (k = 0; k < 100; k++) {
	var parts = ['Host: ', 'host: ', '\r', '\n', 'a', 'B', ':', ' ', '\xe2\x80\xa8',
		'\xe2\x84\xaa', '\xff', 'x.example', ','];
	var s = '';
	for (f = rnd(12); f > 0; f--) s += parts[rnd(parts.length)];
	sniff('http random #' + k, Buffer.from(s, 'latin1'));
}
out('sniff-cases.json', '[\n' + sniffs.map(function(c) {
	return JSON.stringify(c);
}).join(',\n') + '\n]\n');
