// The age v1 file format (c2sp.org/age), as far as nasguard writes and reads
// it: X25519 recipients, the header's MAC, and one stanza of nasguard's own
// that binds a file to its plaintext path. Everything is node:crypto
// (OpenSSL's X25519, HKDF-SHA256, HMAC-SHA256, ChaCha20-Poly1305); the
// Bech32 key encodings come from @scure/base. Stock age ignores stanzas of
// types it does not know, so `age -d -i key file` opens every sealed file.
//
// Header:
//   age-encryption.org/v1
//   -> X25519 <ephemeral share, base64>
//   <the file key wrapped to the recipient, base64 wrapped at 64 columns>
//   -> nasguard-path v1
//   <HMAC-SHA256 of the canonical plaintext path under a key from the file key>
//   --- <HMAC-SHA256 of everything above, from "age" to "---", under HKDF(file key, "header")>
import { createCipheriv, createDecipheriv, createHmac, createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, hkdfSync, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto'
import { bech32 } from '@scure/base'

const INTRO = 'age-encryption.org/v1\n'
const X25519_LABEL = 'age-encryption.org/v1/X25519'
/** The stanza type that carries the path binding; stock age skips it. */
export const PATH_STANZA = 'nasguard-path'
/** A header longer than this is not one nasguard wrote. */
export const MAX_HEADER_BYTES = 4096
const FILE_KEY_BYTES = 16

/** Why a header is refused; never includes key material or the path. */
export class SealedIntegrityError extends Error {
  override name = 'SealedIntegrityError'
  constructor (readonly reason: string) { super(`sealed file refused: ${reason}`) }
}

// ---- keys -------------------------------------------------------------------

// DER prefixes of an X25519 key (RFC 8410): PKCS#8 private, SPKI public.
const PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex')
const SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex')

export interface Identity {
  /** The raw 32-byte X25519 scalar. */
  secret: Buffer
  /** The recipient: age1…, what a recorder encrypts to. */
  recipient: string
  privateKey: KeyObject
  publicKey: Buffer
}

function privateKeyOf (secret: Buffer): KeyObject {
  return createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, secret]), format: 'der', type: 'pkcs8' })
}

function publicKeyObject (raw: Buffer): KeyObject {
  return createPublicKey({ key: Buffer.concat([SPKI_PREFIX, raw]), format: 'der', type: 'spki' })
}

function rawPublic (key: KeyObject): Buffer {
  const der = createPublicKey(key).export({ format: 'der', type: 'spki' })
  return der.subarray(der.length - 32)
}

function bech32Encode (hrp: string, data: Buffer): string {
  return bech32.encode(hrp, bech32.toWords(data), false)
}

function bech32Decode (text: string, hrp: string, what: string): Buffer {
  let decoded
  try {
    decoded = bech32.decode(text as `${string}1${string}`, false)
  } catch {
    throw new Error(`not an age ${what}: invalid Bech32`)
  }
  if (decoded.prefix !== hrp) throw new Error(`not an age ${what}: expected the prefix ${hrp}`)
  const bytes = Buffer.from(bech32.fromWords(decoded.words))
  if (bytes.length !== 32) throw new Error(`not an age ${what}: expected 32 bytes`)
  return bytes
}

export function identityOf (secret: Buffer): Identity {
  const privateKey = privateKeyOf(secret)
  const publicKey = rawPublic(privateKey)
  return { secret, privateKey, publicKey, recipient: bech32Encode('age', publicKey) }
}

export function newIdentity (): Identity {
  const { privateKey } = generateKeyPairSync('x25519')
  const der = privateKey.export({ format: 'der', type: 'pkcs8' })
  return identityOf(Buffer.from(der.subarray(der.length - 32)))
}

/** AGE-SECRET-KEY-1…, as age-keygen writes it. */
export function encodeIdentity (id: Identity): string {
  return bech32Encode('age-secret-key-', id.secret).toUpperCase()
}

export function parseIdentity (text: string): Identity {
  if (text !== text.toUpperCase()) throw new Error('not an age identity: it must be upper case (AGE-SECRET-KEY-1…)')
  return identityOf(bech32Decode(text.toLowerCase(), 'age-secret-key-', 'identity'))
}

/** The raw public key of an age1… recipient. */
export function parseRecipient (text: string): Buffer {
  if (text !== text.toLowerCase()) throw new Error('not an age recipient: it must be lower case (age1…)')
  return bech32Decode(text, 'age', 'recipient')
}

// ---- primitives ---------------------------------------------------------------

function hkdf (ikm: Buffer, salt: Buffer, info: string, length = 32): Buffer {
  return Buffer.from(hkdfSync('sha256', ikm, salt, info, length))
}

const ZERO_NONCE = Buffer.alloc(12)

function seal (key: Buffer, plaintext: Buffer): Buffer {
  const c = createCipheriv('chacha20-poly1305', key, ZERO_NONCE, { authTagLength: 16 })
  return Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()])
}

function open (key: Buffer, sealed: Buffer): Buffer | undefined {
  if (sealed.length < 16) return undefined
  const d = createDecipheriv('chacha20-poly1305', key, ZERO_NONCE, { authTagLength: 16 })
  d.setAuthTag(sealed.subarray(sealed.length - 16))
  try {
    return Buffer.concat([d.update(sealed.subarray(0, sealed.length - 16)), d.final()])
  } catch {
    return undefined
  }
}

/** Standard base64 without padding, as age writes it. */
const b64 = (b: Buffer): string => b.toString('base64').replace(/=+$/, '')

/** Strict: age refuses non-canonical base64 (padding, stray bits, other alphabets). */
function unb64 (text: string): Buffer {
  if (!/^[A-Za-z0-9+/]*$/.test(text) || text.length % 4 === 1) throw new SealedIntegrityError('malformed header (base64)')
  const bytes = Buffer.from(text, 'base64')
  if (b64(bytes) !== text) throw new SealedIntegrityError('malformed header (non-canonical base64)')
  return bytes
}

// ---- stanzas ------------------------------------------------------------------

interface Stanza { type: string, args: string[], body: Buffer }

function encodeStanza (s: Stanza): string {
  const text = b64(s.body)
  let lines = ''
  for (let i = 0; i <= text.length; i += 64) lines += text.slice(i, i + 64) + '\n'
  // A body whose base64 fills whole lines ends with an empty line (the loop's last pass).
  return `-> ${[s.type, ...s.args].join(' ')}\n${lines}`
}

function wrapTo (recipient: Buffer, fileKey: Buffer): Stanza {
  const { privateKey } = generateKeyPairSync('x25519')
  const share = rawPublic(privateKey)
  const shared = diffieHellman({ privateKey, publicKey: publicKeyObject(recipient) })
  const key = hkdf(shared, Buffer.concat([share, recipient]), X25519_LABEL)
  return { type: 'X25519', args: [b64(share)], body: seal(key, fileKey) }
}

function unwrapWith (id: Identity, s: Stanza): Buffer | undefined {
  if (s.type !== 'X25519') return undefined
  if (s.args.length !== 1) throw new SealedIntegrityError('malformed X25519 stanza')
  const share = unb64(s.args[0])
  if (share.length !== 32 || s.body.length !== 32) throw new SealedIntegrityError('malformed X25519 stanza')
  let shared: Buffer
  try {
    shared = diffieHellman({ privateKey: id.privateKey, publicKey: publicKeyObject(share) })
  } catch {
    // OpenSSL refuses a low-order point (an all-zero shared secret) itself.
    throw new SealedIntegrityError('malformed X25519 stanza (low-order share)')
  }
  if (shared.every((b) => b === 0)) throw new SealedIntegrityError('malformed X25519 stanza (low-order share)')
  const key = hkdf(shared, Buffer.concat([share, id.publicKey]), X25519_LABEL)
  return open(key, s.body)
}

/** The path binding: only a holder of the file key can make or check it, and it says nothing of the path without it. */
function pathMac (fileKey: Buffer, path: string): Buffer {
  return createHmac('sha256', hkdf(fileKey, Buffer.alloc(0), 'nasguard path binding')).update(path).digest()
}

function headerMac (fileKey: Buffer, headerUpToDashes: Buffer): Buffer {
  return createHmac('sha256', hkdf(fileKey, Buffer.alloc(0), 'header')).update(headerUpToDashes).digest()
}

// ---- the header ---------------------------------------------------------------

export interface SealedHeader {
  /** The header's bytes, up to and including its final newline. */
  bytes: Buffer
  fileKey: Buffer
}

/** A new header: a fresh file key wrapped to each recipient, bound to the canonical plaintext path. */
export function writeHeader (recipients: Buffer[], path: string): SealedHeader {
  if (recipients.length === 0) throw new Error('at least one recipient is needed')
  const fileKey = randomBytes(FILE_KEY_BYTES)
  const stanzas = recipients.map((r) => wrapTo(r, fileKey))
  stanzas.push({ type: PATH_STANZA, args: ['v1'], body: pathMac(fileKey, path) })
  const upToDashes = Buffer.from(INTRO + stanzas.map(encodeStanza).join('') + '---')
  const mac = headerMac(fileKey, upToDashes)
  return { bytes: Buffer.concat([upToDashes, Buffer.from(` ${b64(mac)}\n`)]), fileKey }
}

interface ParsedHeader { stanzas: Stanza[], upToDashes: Buffer, mac: Buffer, length: number }

/** Reads a header's structure from the start of a file; undefined when more bytes are needed. */
function parseHeader (data: Buffer): ParsedHeader | undefined {
  const end = data.indexOf('\n---', 0, 'latin1')
  const footerEnd = end < 0 ? -1 : data.indexOf('\n', end + 4)
  if (footerEnd < 0) {
    if (data.length >= MAX_HEADER_BYTES) throw new SealedIntegrityError('no age header within the first 4096 bytes')
    return undefined
  }
  const text = data.subarray(0, footerEnd + 1).toString('latin1')
  if (!text.startsWith(INTRO)) throw new SealedIntegrityError('not an age v1 file')
  const footer = text.slice(end + 1, footerEnd)
  if (!footer.startsWith('--- ')) throw new SealedIntegrityError('malformed header (footer)')
  const lines = text.slice(INTRO.length, end + 1).split('\n').slice(0, -1)
  const stanzas: Stanza[] = []
  let i = 0
  while (i < lines.length) {
    const head = lines[i++]
    if (!head.startsWith('-> ')) throw new SealedIntegrityError('malformed header (stanza)')
    const [type, ...args] = head.slice(3).split(' ')
    if (!type || [type, ...args].some((a) => !/^[\x21-\x7e]+$/.test(a))) throw new SealedIntegrityError('malformed header (stanza arguments)')
    let body = ''
    for (;;) {
      if (i >= lines.length) throw new SealedIntegrityError('malformed header (stanza body)')
      const line = lines[i++]
      if (line.length > 64) throw new SealedIntegrityError('malformed header (stanza body line)')
      body += line
      if (line.length < 64) break
    }
    stanzas.push({ type, args, body: unb64(body) })
  }
  if (stanzas.length === 0) throw new SealedIntegrityError('malformed header (no stanza)')
  const mac = unb64(footer.slice(4))
  if (mac.length !== 32) throw new SealedIntegrityError('malformed header (MAC)')
  return { stanzas, upToDashes: data.subarray(0, end + 4), mac, length: footerEnd + 1 }
}

export interface OpenedHeader {
  fileKey: Buffer
  /** The header's MAC: authenticated, and unique to the file (a fresh file key each time one is sealed). */
  mac: Buffer
  /** Bytes of header: the payload's nonce starts here. */
  length: number
}

/**
 * Opens the header at the start of `data` with the identity, and checks
 * that it is bound to `path`. Undefined when `data` holds only part of it.
 * Throws SealedIntegrityError for anything else: a broken or altered
 * header, another key, another path.
 */
export function openHeader (data: Buffer, id: Identity, path: string): OpenedHeader | undefined {
  const h = parseHeader(data)
  if (!h) return undefined
  let fileKey: Buffer | undefined
  for (const s of h.stanzas) {
    fileKey = unwrapWith(id, s)
    if (fileKey) break
  }
  if (!fileKey || fileKey.length !== FILE_KEY_BYTES) throw new SealedIntegrityError('not sealed to this period\'s key')
  if (!timingSafeEqual(headerMac(fileKey, h.upToDashes), h.mac)) throw new SealedIntegrityError('the header was altered (MAC)')
  const bindings = h.stanzas.filter((s) => s.type === PATH_STANZA)
  if (bindings.length !== 1 || bindings[0].args.join(' ') !== 'v1' || bindings[0].body.length !== 32) throw new SealedIntegrityError('no path binding')
  if (!timingSafeEqual(bindings[0].body, pathMac(fileKey, path))) throw new SealedIntegrityError('sealed for another path')
  return { fileKey, mac: h.mac, length: h.length }
}
