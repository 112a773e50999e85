/** The shape of the schema that scripts/generate-schema.js writes from agent.proto. */

/** A field type the codec supports: a scalar, an enum of the package or a message of the package. */
export type FieldType = 'string' | 'bytes' | 'bool' | 'uint32' | { readonly enum: string } | { readonly message: string };

export interface FieldSchema {
  readonly name: string;
  readonly id: number;
  readonly type: FieldType;
  readonly repeated: boolean;
  /** The oneof group the field belongs to, if any. */
  readonly oneof?: string;
}

/** A message's fields in declaration order. */
export type MessageSchema = readonly FieldSchema[];

/** Enum value names and their numbers. */
export type EnumSchema = Readonly<Record<string, number>>;

export interface MethodSchema {
  readonly name: string;
  readonly requestType: string;
  readonly responseType: string;
}

export interface ServiceSchema {
  /** Fully qualified name, for example `kubetrust.agent.v1.Agent`. */
  readonly name: string;
  readonly methods: readonly MethodSchema[];
}
