/**
 * Protocol Buffers encoding and decoding for the messages of agent.proto, driven by the schema
 * that scripts/generate-schema.js writes at build time. It replaces proto-loader and protobufjs at
 * run time: parsing the .proto file and building reflection objects cost each program about 70 ms
 * of CPU at start-up and the agent several MB of resident memory.
 *
 * The objects match what proto-loader gives with the options the generated types describe
 * (keepCase, enums as names, defaults, oneofs), and the bytes match protobufjs's encoder:
 * - encode writes every field that is set (not null or undefined), default values included, in
 *   field number order. Strings, booleans, uint32 and bytes are converted the way protobufjs's
 *   `fromObject` converts them, and an enum takes its name or its number.
 * - decode fills every field that is not part of a oneof with its default: empty string, false,
 *   0, empty buffer, the enum's zero name, null for a message, [] for a repeated field. It sets the
 *   oneof's own key to the name of the member that is present, skips unknown fields and returns
 *   an unknown enum number as the number.
 */
import type { EnumSchema, FieldSchema, FieldType, MessageSchema } from './schema-types';

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_LENGTH_DELIMITED = 2;
const WIRE_FIXED32 = 5;

type Message = Record<string, unknown>;

interface CompiledField extends FieldSchema {
  readonly wireType: number;
  /** The field's key and wire type as written before its value. */
  readonly tag: number;
  readonly enumValues?: EnumSchema;
  /** Enum number to name, for decoding. */
  readonly enumNames?: ReadonlyMap<number, string>;
}

interface CompiledMessage {
  readonly name: string;
  /** Fields in field number order, as they are written. */
  readonly fields: readonly CompiledField[];
  readonly byId: ReadonlyMap<number, CompiledField>;
}

/** A message the codec cannot encode or decode; the text names the message and field. */
export class CodecError extends Error {}

function wireTypeOf(type: FieldType): number {
  if (type === 'string' || type === 'bytes' || typeof type === 'object' && 'message' in type) return WIRE_LENGTH_DELIMITED;
  return WIRE_VARINT;
}

/** Collects the encoded bytes of one message. */
class Writer {
  private readonly chunks: Buffer[] = [];
  private scratch = Buffer.allocUnsafe(64);
  private used = 0;
  private length = 0;

  varint(value: number): void {
    this.reserve(10);
    let rest = value >>> 0;
    while (rest > 0x7f) {
      this.scratch[this.used++] = (rest & 0x7f) | 0x80;
      rest >>>= 7;
    }
    this.scratch[this.used++] = rest;
  }

  /** Writes an int32 varint. A negative number takes ten bytes, as the Protocol Buffers encoding defines. */
  int32(value: number): void {
    if (value >= 0) {
      this.varint(value);
      return;
    }
    this.reserve(10);
    // The two's-complement 64-bit value: the low 32 bits, then 32 set high bits.
    let low = value >>> 0;
    for (let index = 0; index < 4; index++) {
      this.scratch[this.used++] = (low & 0x7f) | 0x80;
      low >>>= 7;
    }
    this.scratch[this.used++] = (low & 0x0f) | 0x70 | 0x80;
    for (let index = 0; index < 4; index++) this.scratch[this.used++] = 0xff;
    this.scratch[this.used++] = 0x01;
  }

  bytes(value: Buffer): void {
    this.varint(value.length);
    if (value.length <= this.scratch.length - this.used) {
      value.copy(this.scratch, this.used);
      this.used += value.length;
      return;
    }
    this.flush();
    this.chunks.push(value);
    this.length += value.length;
  }

  finish(): Buffer {
    this.flush();
    const [only] = this.chunks;
    return this.chunks.length === 1 && only !== undefined ? only : Buffer.concat(this.chunks, this.length);
  }

  private reserve(bytes: number): void {
    if (this.scratch.length - this.used >= bytes) return;
    this.flush();
    if (this.scratch.length < bytes) this.scratch = Buffer.allocUnsafe(bytes);
  }

  private flush(): void {
    if (this.used === 0) return;
    // The chunk keeps the written part of the scratch buffer, so later writes go to a new one.
    this.chunks.push(this.scratch.subarray(0, this.used));
    this.length += this.used;
    this.used = 0;
    this.scratch = Buffer.allocUnsafe(Math.min(this.scratch.length * 2, 8192));
  }
}

/** Reads one message's bytes. */
class Reader {
  position = 0;

  constructor(
    private readonly buffer: Buffer,
    private readonly messageName: string,
  ) {}

  get done(): boolean {
    return this.position >= this.buffer.length;
  }

  /** Reads a varint and returns its low 32 bits as an unsigned number, dropping any higher bits. */
  varint(): number {
    let value = 0;
    for (let index = 0; index < 10; index++) {
      if (this.position >= this.buffer.length) throw this.truncated();
      const byte = this.buffer[this.position++] as number;
      if (index < 5) value += (byte & 0x7f) * 2 ** (7 * index);
      if ((byte & 0x80) === 0) return value % 2 ** 32;
    }
    throw new CodecError(`${this.messageName}: a varint is longer than 10 bytes`);
  }

  lengthDelimited(): Buffer {
    const length = this.varint();
    const end = this.position + length;
    if (end > this.buffer.length) throw this.truncated();
    const value = this.buffer.subarray(this.position, end);
    this.position = end;
    return value;
  }

  skip(wireType: number): void {
    switch (wireType) {
      case WIRE_VARINT:
        this.varint();
        return;
      case WIRE_FIXED64:
        this.advance(8);
        return;
      case WIRE_LENGTH_DELIMITED:
        this.lengthDelimited();
        return;
      case WIRE_FIXED32:
        this.advance(4);
        return;
      default:
        throw new CodecError(`${this.messageName}: wire type ${wireType} is not supported`);
    }
  }

  private advance(bytes: number): void {
    if (this.position + bytes > this.buffer.length) throw this.truncated();
    this.position += bytes;
  }

  private truncated(): CodecError {
    return new CodecError(`${this.messageName}: the message ends inside a field`);
  }
}

/** Encodes and decodes the messages of one schema. */
export class MessageCodec {
  private readonly compiled = new Map<string, CompiledMessage>();

  constructor(
    messages: Readonly<Record<string, MessageSchema>>,
    private readonly enums: Readonly<Record<string, EnumSchema>>,
  ) {
    for (const [name, fields] of Object.entries(messages)) {
      for (const field of fields) {
        if (typeof field.type === 'object' && 'message' in field.type && messages[field.type.message] === undefined) {
          throw new CodecError(`${name}.${field.name}: unknown message type ${field.type.message}`);
        }
      }
      const compiledFields = [...fields].sort((left, right) => left.id - right.id).map((field) => this.compileField(name, field));
      this.compiled.set(name, { name, fields: compiledFields, byId: new Map(compiledFields.map((field) => [field.id, field])) });
    }
  }

  /** Encodes a message object of type `typeName`. */
  encode(typeName: string, message: unknown): Buffer {
    const type = this.message(typeName);
    if (message === null || typeof message !== 'object') throw new CodecError(`${typeName}: object expected`);
    const writer = new Writer();
    this.encodeInto(writer, type, message as Message);
    return writer.finish();
  }

  /** Decodes the bytes of a message of type `typeName`. */
  decode(typeName: string, buffer: Buffer): Message {
    return this.decodeMessage(this.message(typeName), buffer);
  }

  private message(typeName: string): CompiledMessage {
    const type = this.compiled.get(typeName);
    if (type === undefined) throw new CodecError(`unknown message type ${typeName}`);
    return type;
  }

  private compileField(messageName: string, field: FieldSchema): CompiledField {
    const wireType = wireTypeOf(field.type);
    const base = { ...field, wireType, tag: field.id * 8 + wireType };
    if (typeof field.type === 'object' && 'enum' in field.type) {
      const enumValues = this.enums[field.type.enum];
      if (enumValues === undefined) throw new CodecError(`${messageName}.${field.name}: unknown enum ${field.type.enum}`);
      const enumNames = new Map<number, string>();
      // The first name of a number wins, as in protobufjs.
      for (const [name, number] of Object.entries(enumValues)) if (!enumNames.has(number)) enumNames.set(number, name);
      return { ...base, enumValues, enumNames };
    }
    return base;
  }

  private encodeInto(writer: Writer, type: CompiledMessage, message: Message): void {
    for (const field of type.fields) {
      const value = message[field.name];
      if (value === null || value === undefined) continue;
      if (field.repeated) {
        // protobufjs skips a falsy value and rejects any other value that is not an array.
        if (!value) continue;
        if (!Array.isArray(value)) throw new CodecError(`${type.name}.${field.name}: array expected`);
        for (const item of value) this.encodeValue(writer, type, field, item);
      } else {
        this.encodeValue(writer, type, field, value);
      }
    }
  }

  private encodeValue(writer: Writer, type: CompiledMessage, field: CompiledField, value: unknown): void {
    const fieldType = field.type;
    if (typeof fieldType === 'object' && 'message' in fieldType) {
      if (value === null || typeof value !== 'object') throw new CodecError(`${type.name}.${field.name}: object expected`);
      const child = new Writer();
      this.encodeInto(child, this.message(fieldType.message), value as Message);
      writer.varint(field.tag);
      writer.bytes(child.finish());
      return;
    }
    if (field.enumValues !== undefined) {
      let number: number | undefined;
      if (typeof value === 'number') number = value;
      else if (typeof value === 'string' && Object.prototype.hasOwnProperty.call(field.enumValues, value)) number = field.enumValues[value];
      // protobufjs leaves a name it does not know unset.
      if (number === undefined) return;
      writer.varint(field.tag);
      writer.int32(number | 0);
      return;
    }
    writer.varint(field.tag);
    switch (fieldType) {
      case 'string':
        writer.bytes(Buffer.from(String(value), 'utf8'));
        return;
      case 'bytes':
        writer.bytes(bytesOf(type, field, value));
        return;
      case 'bool':
        writer.varint(value ? 1 : 0);
        return;
      case 'uint32':
        writer.varint(Number(value) >>> 0);
        return;
    }
  }

  private decodeMessage(type: CompiledMessage, buffer: Buffer): Message {
    const message: Message = {};
    for (const field of type.fields) if (field.repeated) message[field.name] = [];
    for (const field of type.fields) if (!field.repeated && field.oneof === undefined) message[field.name] = defaultOf(field);
    const reader = new Reader(buffer, type.name);
    while (!reader.done) {
      const key = reader.varint();
      const wireType = key & 7;
      const field = type.byId.get(Math.floor(key / 8));
      if (field === undefined) {
        reader.skip(wireType);
        continue;
      }
      if (wireType !== field.wireType) {
        throw new CodecError(`${type.name}.${field.name}: wire type ${wireType} where ${field.wireType} was expected`);
      }
      const value = this.decodeValue(reader, field);
      if (field.repeated) {
        (message[field.name] as unknown[]).push(value);
      } else {
        message[field.name] = value;
        if (field.oneof !== undefined) message[field.oneof] = field.name;
      }
    }
    return message;
  }

  private decodeValue(reader: Reader, field: CompiledField): unknown {
    const fieldType = field.type;
    if (typeof fieldType === 'object' && 'message' in fieldType) {
      return this.decodeMessage(this.message(fieldType.message), reader.lengthDelimited());
    }
    if (field.enumNames !== undefined) {
      const number = reader.varint() | 0;
      return field.enumNames.get(number) ?? number;
    }
    switch (fieldType) {
      case 'string':
        return reader.lengthDelimited().toString('utf8');
      case 'bytes':
        return reader.lengthDelimited();
      case 'bool':
        return reader.varint() !== 0;
      default:
        return reader.varint();
    }
  }
}

function defaultOf(field: CompiledField): unknown {
  const fieldType = field.type;
  if (typeof fieldType === 'object') return 'message' in fieldType ? null : field.enumNames?.get(0) ?? 0;
  switch (fieldType) {
    case 'string':
      return '';
    case 'bytes':
      return Buffer.alloc(0);
    case 'bool':
      return false;
    default:
      return 0;
  }
}

/** Converts a bytes field's value to a Buffer: a Buffer or Uint8Array as it is, a string from base64. */
function bytesOf(type: CompiledMessage, field: CompiledField, value: unknown): Buffer {
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  if (typeof value === 'string') return Buffer.from(value, 'base64');
  if (Array.isArray(value)) return Buffer.from(value as number[]);
  throw new CodecError(`${type.name}.${field.name}: bytes expected as a Buffer, a Uint8Array or a base64 string`);
}
