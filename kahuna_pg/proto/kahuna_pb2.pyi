from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GrpcSequenceDurability(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEQUENCE_DURABILITY_UNSPECIFIED: _ClassVar[GrpcSequenceDurability]
    SEQUENCE_PERSISTENT: _ClassVar[GrpcSequenceDurability]
    SEQUENCE_EPHEMERAL: _ClassVar[GrpcSequenceDurability]

class GrpcSequenceResponseType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEQUENCE_SUCCESS: _ClassVar[GrpcSequenceResponseType]
    SEQUENCE_NOT_FOUND: _ClassVar[GrpcSequenceResponseType]
    SEQUENCE_ALREADY_EXISTS: _ClassVar[GrpcSequenceResponseType]
    SEQUENCE_INVALID_INPUT: _ClassVar[GrpcSequenceResponseType]
    SEQUENCE_MAX_VALUE_EXCEEDED: _ClassVar[GrpcSequenceResponseType]
    SEQUENCE_MUST_RETRY: _ClassVar[GrpcSequenceResponseType]
    SEQUENCE_ABORTED: _ClassVar[GrpcSequenceResponseType]
    SEQUENCE_ERROR: _ClassVar[GrpcSequenceResponseType]
SEQUENCE_DURABILITY_UNSPECIFIED: GrpcSequenceDurability
SEQUENCE_PERSISTENT: GrpcSequenceDurability
SEQUENCE_EPHEMERAL: GrpcSequenceDurability
SEQUENCE_SUCCESS: GrpcSequenceResponseType
SEQUENCE_NOT_FOUND: GrpcSequenceResponseType
SEQUENCE_ALREADY_EXISTS: GrpcSequenceResponseType
SEQUENCE_INVALID_INPUT: GrpcSequenceResponseType
SEQUENCE_MAX_VALUE_EXCEEDED: GrpcSequenceResponseType
SEQUENCE_MUST_RETRY: GrpcSequenceResponseType
SEQUENCE_ABORTED: GrpcSequenceResponseType
SEQUENCE_ERROR: GrpcSequenceResponseType

class GrpcCreateSequenceRequest(_message.Message):
    __slots__ = ("Name", "InitialValue", "Increment", "MaxValue", "Durability")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INITIALVALUE_FIELD_NUMBER: _ClassVar[int]
    INCREMENT_FIELD_NUMBER: _ClassVar[int]
    MAXVALUE_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_FIELD_NUMBER: _ClassVar[int]
    Name: str
    InitialValue: int
    Increment: int
    MaxValue: int
    Durability: GrpcSequenceDurability
    def __init__(self, Name: _Optional[str] = ..., InitialValue: _Optional[int] = ..., Increment: _Optional[int] = ..., MaxValue: _Optional[int] = ..., Durability: _Optional[_Union[GrpcSequenceDurability, str]] = ...) -> None: ...

class GrpcGetSequenceRequest(_message.Message):
    __slots__ = ("Name", "Durability")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_FIELD_NUMBER: _ClassVar[int]
    Name: str
    Durability: GrpcSequenceDurability
    def __init__(self, Name: _Optional[str] = ..., Durability: _Optional[_Union[GrpcSequenceDurability, str]] = ...) -> None: ...

class GrpcNextSequenceRequest(_message.Message):
    __slots__ = ("Name", "IdempotencyKey", "Durability")
    NAME_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCYKEY_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_FIELD_NUMBER: _ClassVar[int]
    Name: str
    IdempotencyKey: str
    Durability: GrpcSequenceDurability
    def __init__(self, Name: _Optional[str] = ..., IdempotencyKey: _Optional[str] = ..., Durability: _Optional[_Union[GrpcSequenceDurability, str]] = ...) -> None: ...

class GrpcReserveSequenceRangeRequest(_message.Message):
    __slots__ = ("Name", "Count", "IdempotencyKey", "Durability")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCYKEY_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_FIELD_NUMBER: _ClassVar[int]
    Name: str
    Count: int
    IdempotencyKey: str
    Durability: GrpcSequenceDurability
    def __init__(self, Name: _Optional[str] = ..., Count: _Optional[int] = ..., IdempotencyKey: _Optional[str] = ..., Durability: _Optional[_Union[GrpcSequenceDurability, str]] = ...) -> None: ...

class GrpcDeleteSequenceRequest(_message.Message):
    __slots__ = ("Name", "Durability")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_FIELD_NUMBER: _ClassVar[int]
    Name: str
    Durability: GrpcSequenceDurability
    def __init__(self, Name: _Optional[str] = ..., Durability: _Optional[_Union[GrpcSequenceDurability, str]] = ...) -> None: ...

class GrpcSequenceEntry(_message.Message):
    __slots__ = ("Name", "CurrentValue", "InitialValue", "Increment", "MaxValue", "Revision", "Durability", "CreatedAtNode", "CreatedAtPhysical", "CreatedAtCounter", "UpdatedAtNode", "UpdatedAtPhysical", "UpdatedAtCounter")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CURRENTVALUE_FIELD_NUMBER: _ClassVar[int]
    INITIALVALUE_FIELD_NUMBER: _ClassVar[int]
    INCREMENT_FIELD_NUMBER: _ClassVar[int]
    MAXVALUE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_FIELD_NUMBER: _ClassVar[int]
    CREATEDATNODE_FIELD_NUMBER: _ClassVar[int]
    CREATEDATPHYSICAL_FIELD_NUMBER: _ClassVar[int]
    CREATEDATCOUNTER_FIELD_NUMBER: _ClassVar[int]
    UPDATEDATNODE_FIELD_NUMBER: _ClassVar[int]
    UPDATEDATPHYSICAL_FIELD_NUMBER: _ClassVar[int]
    UPDATEDATCOUNTER_FIELD_NUMBER: _ClassVar[int]
    Name: str
    CurrentValue: int
    InitialValue: int
    Increment: int
    MaxValue: int
    Revision: int
    Durability: GrpcSequenceDurability
    CreatedAtNode: int
    CreatedAtPhysical: int
    CreatedAtCounter: int
    UpdatedAtNode: int
    UpdatedAtPhysical: int
    UpdatedAtCounter: int
    def __init__(self, Name: _Optional[str] = ..., CurrentValue: _Optional[int] = ..., InitialValue: _Optional[int] = ..., Increment: _Optional[int] = ..., MaxValue: _Optional[int] = ..., Revision: _Optional[int] = ..., Durability: _Optional[_Union[GrpcSequenceDurability, str]] = ..., CreatedAtNode: _Optional[int] = ..., CreatedAtPhysical: _Optional[int] = ..., CreatedAtCounter: _Optional[int] = ..., UpdatedAtNode: _Optional[int] = ..., UpdatedAtPhysical: _Optional[int] = ..., UpdatedAtCounter: _Optional[int] = ...) -> None: ...

class GrpcSequenceAllocation(_message.Message):
    __slots__ = ("Name", "Start", "End", "Count", "Revision")
    NAME_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    Name: str
    Start: int
    End: int
    Count: int
    Revision: int
    def __init__(self, Name: _Optional[str] = ..., Start: _Optional[int] = ..., End: _Optional[int] = ..., Count: _Optional[int] = ..., Revision: _Optional[int] = ...) -> None: ...

class GrpcSequenceResponse(_message.Message):
    __slots__ = ("ServedFrom", "Type", "Sequence", "Revision", "TimeElapsedMs")
    SERVEDFROM_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    TIMEELAPSEDMS_FIELD_NUMBER: _ClassVar[int]
    ServedFrom: str
    Type: GrpcSequenceResponseType
    Sequence: GrpcSequenceEntry
    Revision: int
    TimeElapsedMs: int
    def __init__(self, ServedFrom: _Optional[str] = ..., Type: _Optional[_Union[GrpcSequenceResponseType, str]] = ..., Sequence: _Optional[_Union[GrpcSequenceEntry, _Mapping]] = ..., Revision: _Optional[int] = ..., TimeElapsedMs: _Optional[int] = ...) -> None: ...

class GrpcSequenceAllocationResponse(_message.Message):
    __slots__ = ("ServedFrom", "Type", "Allocation", "TimeElapsedMs")
    SERVEDFROM_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ALLOCATION_FIELD_NUMBER: _ClassVar[int]
    TIMEELAPSEDMS_FIELD_NUMBER: _ClassVar[int]
    ServedFrom: str
    Type: GrpcSequenceResponseType
    Allocation: GrpcSequenceAllocation
    TimeElapsedMs: int
    def __init__(self, ServedFrom: _Optional[str] = ..., Type: _Optional[_Union[GrpcSequenceResponseType, str]] = ..., Allocation: _Optional[_Union[GrpcSequenceAllocation, _Mapping]] = ..., TimeElapsedMs: _Optional[int] = ...) -> None: ...
